#if canImport(Glibc)
import Glibc
#endif

/// Rotary-embedding frequencies from the one model description, for both backends.
extension ModelConfig {
    /// The linear rope-scaling factor positions are divided by on global (or, with `local`, sliding-window)
    /// layers; Gemma 3 scales only its global layers.
    public func linearRopeFactor(local: Bool) -> Double? {
        guard case .linear(let factor) = ropeScaling, !local || architecture != .gemma3 else { return nil }
        return factor
    }

    /// The `headDim / 2` rotary frequencies of global or local layers: the layer kind's rope base, then
    /// Llama 3 scaling or the checkpoint's per-frequency factors. With `dividingByLinearFactor`, linear
    /// scaling is folded into the frequencies too (else the caller divides positions by
    /// `linearRopeFactor`).
    public func ropeFrequencies(local: Bool, frequencyFactors: [Float]?, dividingByLinearFactor: Bool = false) -> [Double] {
        let theta = local ? (ropeLocalTheta ?? ropeTheta) : ropeTheta
        let linear = dividingByLinearFactor ? linearRopeFactor(local: local) : nil
        return (0..<headDim / 2).map { i in
            var freq = 1 / pow(theta, Double(2 * i) / Double(headDim))
            if let linear { freq /= linear }
            if case .llama3(let factor, let low, let high, let original) = ropeScaling {
                let wavelength = 2 * Double.pi / freq
                let lowWavelength = Double(original) / low, highWavelength = Double(original) / high
                if wavelength > lowWavelength {
                    freq /= factor
                } else if wavelength >= highWavelength {
                    let smooth = (Double(original) / wavelength - low) / (high - low)
                    freq = (1 - smooth) * freq / factor + smooth * freq
                }
            } else if let f = frequencyFactors {
                freq /= Double(f[i])
            }
            return freq
        }
    }
}
