"""Device run: `copyseek train`'s training without its export (the export's ASMK codebook needs faiss,
which the device lacks): the end model is saved as RUN_DIR/end.pt and exported where faiss is, with
`copyseek train --out DIR --export end.pt`.

    usage: train_end.py train [the options of copyseek train]
"""
import argparse
import sys
from pathlib import Path

from copyseek.learn import cli
from copyseek.learn.train import Trainer, save_atomically

parser = argparse.ArgumentParser()
cli.add_parser(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
trainer = Trainer(cli.settings(args), Path(args.out), progress=not args.quiet)
try:
    trainer.train()
finally:
    trainer.close()
save_atomically({"model": {k: v.cpu() for k, v in trainer.model.state_dict().items()}, "state": {},
                 "config": trainer.config.to_dict()}, Path(args.out) / "end.pt")
print(f"end model: {Path(args.out) / 'end.pt'}")
