/// A problem with a model, checkpoint or tokenizer file. The message always names the file.
public struct ModelFileError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let problem: String

    public init(_ file: String, _ problem: String) {
        self.file = file
        self.problem = problem
    }

    public var description: String { "\(file): \(problem)" }
}
