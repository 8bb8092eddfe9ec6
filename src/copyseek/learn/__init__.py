"""Trainable descriptors: models, losses, huge-batch training, distillation and export.

    from copyseek.learn.models import build_model
    from copyseek.learn.losses import RecallAtK, SiMix
    from copyseek.learn.chunked import chunked_backward
    from copyseek.learn.config import TrainConfig
    from copyseek.learn.train import train

    model_path = train(TrainConfig(images="photos/", minutes=30), "runs/r1")  # -> runs/r1/model.onnx

See docs/learn.md. torch is imported by the submodules only, so `import copyseek.learn` is free.
"""
