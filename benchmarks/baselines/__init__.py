"""Reference implementations the benchmarks compare vae_zoo against."""
