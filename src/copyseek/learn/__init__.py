"""Trainable descriptors: models, losses, huge-batch training, distillation and export.

>>> import torch
>>> from copyseek.learn.config import TrainConfig
>>> from copyseek.learn.models import build_model
>>> from copyseek.learn.registry import build_loss
>>> model = build_model("resnet-small", dim=16, image_size=32)
>>> loss = build_loss(TrainConfig(loss="recall@k+simix"))   # terms found by name in learn/registry.py
>>> images, labels = torch.rand(6, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2])
>>> value = loss(model(images), labels)
>>> value.backward()
>>> value.ndim, 0 <= value.item() <= 1
(0, True)

`copyseek.learn.train.train(TrainConfig(images="photos/", minutes=30), "runs/r1")` runs all of it
(edited views of the photos as positives, memory-chunked huge batches, checkpoints) and exports
runs/r1/model.onnx for `copyseek index --model onnx:runs/r1/model.onnx`; `copyseek train` is the
same from the command line.

See docs/learn.md. torch is imported by the submodules only, so `import copyseek.learn` is free.
"""
