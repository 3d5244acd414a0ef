import ArgumentParser
import Contrail

@main
struct ContrailCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contrail",
        abstract: "Contrail: an LLM inference server for Llama and Gemma models.",
        subcommands: [ServeCommand.self, GenerateCommand.self, InspectCommand.self, TokenizeCommand.self, EngineBenchCommand.self, BenchCommand.self, ProbeCommand.self, PJRTInfoCommand.self]
    )
}
