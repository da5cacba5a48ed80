"""Detection operators in plain PyTorch, mirroring ``torchvision.ops``."""

__all__: list[str] = []
