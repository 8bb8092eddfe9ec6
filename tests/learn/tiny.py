"""Tiny versions of the architectures, so that tests exercise the real layers in milliseconds."""

from copyseek.learn.models import AvgPool, Descriptor, GeM, ResNet, ViT


def tiny_model(arch: str, dim: int = 16, image_size: int = 32) -> Descriptor:
    if arch == "resnet":
        return Descriptor(ResNet((8, 16), (1, 1), stem=8), GeM(), dim)
    if arch == "vit":
        return Descriptor(ViT(image_size, patch=8, dim=16, depth=2, heads=2), AvgPool(), dim)
    raise ValueError(arch)
