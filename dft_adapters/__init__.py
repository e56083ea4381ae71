"""pesflow: dft_adapters."""
