"""The one inference engine (KV-cached decoding, streaming, batches) and the sampler."""
