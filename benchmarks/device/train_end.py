"""Device run: `copyseek train`, its export replaced by saving the end model (the export's ASMK
codebook needs faiss, which the device lacks; the model is exported here with `copyseek train --export`)."""
import sys
from pathlib import Path

from copyseek.learn import train as T


def save_end_model(model, config, out, progress=True):
    path = Path(out) / "end.pt"
    T.save_atomically({"model": {k: v.cpu() for k, v in model.state_dict().items()},
                       "state": {}, "config": config.to_dict()}, path)
    return path


T.export_model = save_end_model
from copyseek.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
