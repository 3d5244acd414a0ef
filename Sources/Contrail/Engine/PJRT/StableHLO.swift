/// A value of a StableHLO function being written: its SSA name, shape and element type.
struct HLOValue {
    let name: String
    let shape: [Int]
    let element: String

    var type: String { shape.isEmpty ? "tensor<\(element)>" : "tensor<\(shape.map(String.init).joined(separator: "x"))x\(element)>" }
}

/// How an argument or result of a program partitioned over a device group lies on its devices: whole on
/// each, or cut into equal consecutive parts along one dimension (part i on the group's device i).
enum Sharding: Equatable {
    case replicated
    case split(Int)

    /// GSPMD's text for it over `n` devices, e.g. `{devices=[1,2]0,1}` for `.split(1)` of a matrix.
    func text(rank: Int, devices n: Int) -> String {
        switch self {
        case .replicated: return "{replicated}"
        case .split(let d):
            let tiles = (0..<rank).map { $0 == d ? String(n) : "1" }.joined(separator: ",")
            return "{devices=[\(tiles)]\((0..<n).map(String.init).joined(separator: ","))}"
        }
    }
}

/// Writes one `@main` in StableHLO's generic MLIR syntax, op by op, checking shapes as it goes (a shape
/// mistake is caught here, by name, rather than as a compiler error about an SSA number). With
/// `partitions` > 1 the program is written for the whole arrays and annotated with shardings; XLA's SPMD
/// partitioner cuts it into one program per device and adds the collectives.
struct StableHLOWriter {
    let partitions: Int
    private var body: [String] = []
    private var arguments: [HLOValue] = []
    private var argumentAttributes: [String] = []
    /// Each argument's sharding, in order.
    private(set) var argumentShardings: [Sharding] = []
    private var counter = 0

    init(partitions: Int = 1) { self.partitions = partitions }

    private mutating func fresh() -> String {
        counter += 1
        return "%v\(counter)"
    }

    private static func dims(_ v: [Int]) -> String { v.isEmpty ? "array<i64>" : "array<i64: \(v.map(String.init).joined(separator: ", "))>" }

    /// A parameter of @main; `donatedTo` aliases it with that result (the input's memory is reused for
    /// the output, so a cache updated every step is never copied).
    mutating func argument(_ shape: [Int], _ element: String = "f32", donatedTo result: Int? = nil, sharding: Sharding = .replicated) -> HLOValue {
        if case .split(let d) = sharding { precondition(shape[d] % partitions == 0, "split \(shape) along \(d) into \(partitions)") }
        let v = HLOValue(name: "%arg\(arguments.count)", shape: shape, element: element)
        arguments.append(v)
        argumentShardings.append(sharding)
        var attributes: [String] = []
        if partitions > 1 { attributes.append("mhlo.sharding = \"\(sharding.text(rank: shape.count, devices: partitions))\"") }
        if let result { attributes.append("tf.aliasing_output = \(result) : i32") }
        argumentAttributes.append(attributes.isEmpty ? "" : " {\(attributes.joined(separator: ", "))}")
        return v
    }

    private mutating func emit(_ op: String, _ operands: [HLOValue], _ attributes: String = "", _ shape: [Int], _ element: String) -> HLOValue {
        let out = HLOValue(name: fresh(), shape: shape, element: element)
        let attrs = attributes.isEmpty ? "" : " {\(attributes)}"
        body.append("    \(out.name) = \"stablehlo.\(op)\"(\(operands.map(\.name).joined(separator: ", ")))\(attrs) : "
                    + "(\(operands.map(\.type).joined(separator: ", "))) -> \(out.type)")
        return out
    }

    /// A scalar f32 constant broadcast to `shape` (bit pattern in hex: exact, no decimal round trip).
    mutating func constant(_ x: Float, _ shape: [Int] = []) -> HLOValue {
        let scalar = HLOValue(name: fresh(), shape: [], element: "f32")
        body.append("    \(scalar.name) = \"stablehlo.constant\"() {value = dense<0x\(String(x.bitPattern, radix: 16, uppercase: true))> : tensor<f32>} : () -> tensor<f32>")
        return shape.isEmpty ? scalar : broadcast(scalar, to: shape, dims: [])
    }

    mutating func binary(_ op: String, _ a: HLOValue, _ b: HLOValue) -> HLOValue {
        precondition(a.shape == b.shape, "\(op): shapes \(a.shape) and \(b.shape)")
        return emit(op, [a, b], "", a.shape, a.element)
    }

    mutating func add(_ a: HLOValue, _ b: HLOValue) -> HLOValue { binary("add", a, b) }
    mutating func mul(_ a: HLOValue, _ b: HLOValue) -> HLOValue { binary("multiply", a, b) }
    mutating func sub(_ a: HLOValue, _ b: HLOValue) -> HLOValue { binary("subtract", a, b) }
    mutating func div(_ a: HLOValue, _ b: HLOValue) -> HLOValue { binary("divide", a, b) }
    mutating func unary(_ op: String, _ a: HLOValue) -> HLOValue { emit(op, [a], "", a.shape, a.element) }

    mutating func convert(_ a: HLOValue, to element: String) -> HLOValue { emit("convert", [a], "", a.shape, element) }

    mutating func broadcast(_ a: HLOValue, to shape: [Int], dims: [Int]) -> HLOValue {
        precondition(dims.count == a.shape.count && zip(dims, a.shape).allSatisfy { shape[$0] == $1 }, "broadcast \(a.shape) → \(shape) via \(dims)")
        return emit("broadcast_in_dim", [a], "broadcast_dimensions = \(Self.dims(dims))", shape, a.element)
    }

    mutating func reshape(_ a: HLOValue, _ shape: [Int]) -> HLOValue {
        precondition(a.shape.reduce(1, *) == shape.reduce(1, *), "reshape \(a.shape) → \(shape)")
        return emit("reshape", [a], "", shape, a.element)
    }

    mutating func transpose(_ a: HLOValue, _ permutation: [Int]) -> HLOValue {
        emit("transpose", [a], "permutation = \(Self.dims(permutation))", permutation.map { a.shape[$0] }, a.element)
    }

    mutating func slice(_ a: HLOValue, start: [Int], limit: [Int]) -> HLOValue {
        emit("slice", [a], "start_indices = \(Self.dims(start)), limit_indices = \(Self.dims(limit)), strides = \(Self.dims(a.shape.map { _ in 1 }))",
             zip(start, limit).map { $1 - $0 }, a.element)
    }

    mutating func concatenate(_ values: [HLOValue], dimension: Int) -> HLOValue {
        var shape = values[0].shape
        shape[dimension] = values.map { $0.shape[dimension] }.reduce(0, +)
        return emit("concatenate", values, "dimension = \(dimension) : i64", shape, values[0].element)
    }

    mutating func iota(_ shape: [Int], dimension: Int, _ element: String = "i32") -> HLOValue {
        emit("iota", [], "iota_dimension = \(dimension) : i64", shape, element)
    }

    /// Elementwise comparison (`GE`, `LT`, …) to a boolean tensor.
    mutating func compare(_ a: HLOValue, _ b: HLOValue, _ direction: String) -> HLOValue {
        precondition(a.shape == b.shape)
        return emit("compare", [a, b], "comparison_direction = #stablehlo<comparison_direction \(direction)>", a.shape, "i1")
    }

    mutating func select(_ predicate: HLOValue, _ a: HLOValue, _ b: HLOValue) -> HLOValue {
        emit("select", [predicate, a, b], "", a.shape, a.element)
    }

    /// Generalized matrix product: batch dims first, then lhs free dims, then rhs free dims.
    mutating func dot(_ a: HLOValue, _ b: HLOValue, batch: ([Int], [Int]) = ([], []), contract: ([Int], [Int])) -> HLOValue {
        let free = { (v: HLOValue, used: [Int]) in v.shape.indices.filter { !used.contains($0) }.map { v.shape[$0] } }
        let shape = batch.0.map { a.shape[$0] } + free(a, batch.0 + contract.0) + free(b, batch.1 + contract.1)
        func list(_ v: [Int]) -> String { "[\(v.map(String.init).joined(separator: ", "))]" }
        let numbers = "#stablehlo.dot<lhs_batching_dimensions = \(list(batch.0)), rhs_batching_dimensions = \(list(batch.1)), "
            + "lhs_contracting_dimensions = \(list(contract.0)), rhs_contracting_dimensions = \(list(contract.1))>"
        return emit("dot_general", [a, b], "dot_dimension_numbers = \(numbers)", shape, a.element)
    }

    /// A reduction with `op` (add, maximum, minimum) over `dimensions`, from `initial` (an f32 value,
    /// or for i32 tensors an integer one).
    mutating func reduce(_ a: HLOValue, _ op: String, dimensions: [Int], initial: Float) -> HLOValue {
        let start = a.element == "f32" ? constant(initial) : index(Int(initial))
        let scalar = "tensor<\(a.element)>"
        let x = fresh(), y = fresh(), r = fresh()
        let out = HLOValue(name: fresh(), shape: a.shape.indices.filter { !dimensions.contains($0) }.map { a.shape[$0] }, element: a.element)
        body.append("    \(out.name) = \"stablehlo.reduce\"(\(a.name), \(start.name)) ({")
        body.append("    ^bb0(\(x): \(scalar), \(y): \(scalar)):")
        body.append("      \(r) = \"stablehlo.\(op)\"(\(x), \(y)) : (\(scalar), \(scalar)) -> \(scalar)")
        body.append("      \"stablehlo.return\"(\(r)) : (\(scalar)) -> ()")
        body.append("    }) {dimensions = \(Self.dims(dimensions))} : (\(a.type), \(scalar)) -> \(out.type)")
        return out
    }

    /// The index of each row's largest value over the last dimension (the first one on ties), i32.
    mutating func argmax(_ a: HLOValue) -> HLOValue {
        let last = a.shape.count - 1, rows = Array(0..<last), n = a.shape[last]
        let top = broadcast(reduce(a, "maximum", dimensions: [last], initial: -Float.infinity), to: a.shape, dims: rows)
        let candidates = select(compare(a, top, "EQ"), iota(a.shape, dimension: last), broadcast(index(n), to: a.shape, dims: []))
        return reduce(candidates, "minimum", dimensions: [last], initial: Float(n))
    }

    /// `update` written into `a` at the scalar i32 `starts` (one per dimension).
    mutating func dynamicUpdateSlice(_ a: HLOValue, _ update: HLOValue, _ starts: [HLOValue]) -> HLOValue {
        precondition(update.shape.count == a.shape.count && starts.count == a.shape.count)
        return emit("dynamic_update_slice", [a, update] + starts, "", a.shape, a.element)
    }

    /// The `sizes` block of `a` at the scalar i32 `starts`.
    mutating func dynamicSlice(_ a: HLOValue, _ starts: [HLOValue], sizes: [Int]) -> HLOValue {
        emit("dynamic_slice", [a] + starts, "slice_sizes = \(Self.dims(sizes))", sizes, a.element)
    }

    /// A scalar i32 constant.
    mutating func index(_ i: Int) -> HLOValue {
        let v = HLOValue(name: fresh(), shape: [], element: "i32")
        body.append("    \(v.name) = \"stablehlo.constant\"() {value = dense<\(i)> : tensor<i32>} : () -> tensor<i32>")
        return v
    }

    /// A scalar unsigned 32-bit constant.
    mutating func unsigned(_ v: UInt32) -> HLOValue {
        let out = HLOValue(name: fresh(), shape: [], element: "ui32")
        body.append("    \(out.name) = \"stablehlo.constant\"() {value = dense<\(v)> : tensor<ui32>} : () -> tensor<ui32>")
        return out
    }

    /// Each row sorted along its last dimension, largest first.
    mutating func sortDescending(_ a: HLOValue) -> HLOValue {
        let x = fresh(), y = fresh(), r = fresh()
        let out = HLOValue(name: fresh(), shape: a.shape, element: a.element)
        let scalar = "tensor<\(a.element)>"
        body.append("    \(out.name) = \"stablehlo.sort\"(\(a.name)) ({")
        body.append("    ^bb0(\(x): \(scalar), \(y): \(scalar)):")
        body.append("      \(r) = \"stablehlo.compare\"(\(x), \(y)) {comparison_direction = #stablehlo<comparison_direction GT>} : (\(scalar), \(scalar)) -> tensor<i1>")
        body.append("      \"stablehlo.return\"(\(r)) : (tensor<i1>) -> ()")
        body.append("    }) {dimension = \(a.shape.count - 1) : i64, is_stable = false} : (\(a.type)) -> \(out.type)")
        return out
    }

    /// Rows of `table` [n, d] at `ids` [t] → [t, d].
    mutating func gatherRows(_ table: HLOValue, _ ids: HLOValue) -> HLOValue {
        let index = reshape(ids, [ids.shape[0], 1])
        let numbers = "#stablehlo.gather<offset_dims = [1], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 1>"
        return emit("gather", [table, index], "dimension_numbers = \(numbers), slice_sizes = \(Self.dims([1, table.shape[1]])), indices_are_sorted = false",
                    [ids.shape[0], table.shape[1]], table.element)
    }

    /// The module text, returning `results` (laid out as `shardings` says; replicated where it says nothing).
    func module(_ name: String, returning results: [HLOValue], shardings: [Sharding] = []) -> String {
        let args = zip(arguments, argumentAttributes).map { "\($0.name): \($0.type)\($1)" }.joined(separator: ", ")
        let types = results.map(\.type).joined(separator: ", ")
        var resultTypes = types, attributes = ""
        if partitions > 1 {
            resultTypes = results.enumerated().map { i, r in
                let sharding = i < shardings.count ? shardings[i] : .replicated
                return "\(r.type) {mhlo.sharding = \"\(sharding.text(rank: r.shape.count, devices: partitions))\"}"
            }.joined(separator: ", ")
            attributes = " attributes {mhlo.num_partitions = \(partitions) : i32, mhlo.num_replicas = 1 : i32}"
        }
        return "module @\(name)\(attributes) {\n  func.func public @main(\(args)) -> (\(resultTypes)) {\n" + body.joined(separator: "\n")
            + "\n    \"func.return\"(\(results.map(\.name).joined(separator: ", "))) : (\(types)) -> ()\n  }\n}\n"
    }
}
