"""maskgen: landmark-driven synthetic face masks for masked-face recognition research."""

__version__ = "0.1.0"
