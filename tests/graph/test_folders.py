from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from copyseek.cli import main
from copyseek.errors import CopyseekError
from copyseek.graph.dedup import DedupParams
from copyseek.graph.folders import HashVerifier, LocalVerifier, dedup_folder
from tests.making import crop_copy, write_photos


@pytest.fixture
def folder(tmp_path):
    """6 photos, copies of the first two in a sub-folder under the same file names."""
    root = tmp_path / "photos"
    photos = write_photos(root, 6)
    (root / "copies").mkdir()
    for source in photos[:2]:
        crop_copy(source, root / "copies" / source.name, fraction=0.9, quality=85)
    return root


def write_graphics(root):
    """A flat graphic (few SIFT keypoints) as PNG, as a JPEG and at half size, and another graphic."""
    from PIL import ImageDraw

    root.mkdir(parents=True, exist_ok=True)
    logo = Image.new("RGB", (256, 256), (30, 80, 160))
    draw = ImageDraw.Draw(logo)
    draw.ellipse((40, 40, 180, 180), fill=(240, 200, 20))
    draw.rectangle((120, 150, 240, 230), fill=(200, 30, 60))
    logo.save(root / "logo.png")
    logo.save(root / "logo.jpg", quality=60)
    logo.resize((128, 128)).save(root / "logo-small.jpg")
    other = Image.new("RGB", (256, 256), (240, 240, 230))
    ImageDraw.Draw(other).polygon([(10, 200), (128, 20), (246, 200)], fill=(90, 40, 200))
    other.save(root / "other.png")
    return root


def model(tiny_onnx):
    return f"onnx:{tiny_onnx}"


class TestDedupFolder:
    def test_finds_the_copies_and_writes_every_output(self, tmp_path, folder, tiny_onnx):
        report = dedup_folder(
            folder, tmp_path / "groups.json", plot=tmp_path / "groups.png", model=model(tiny_onnx),
            params=DedupParams(k=3, accept=0.97, candidate=0.5), progress=False,
        )
        result = json.loads((tmp_path / "groups.json").read_text())
        assert len(result) == 8 and "copies/img0000.jpg" in result and "img0000.jpg" in result
        assert [n for n, _ in result["img0000.jpg"]] == ["copies/img0000.jpg"]
        assert [n for n, _ in result["copies/img0001.jpg"]] == ["img0001.jpg"]
        assert report.groups.n_groups == 2 and (~report.keep).sum() == 2
        assert (tmp_path / "groups.groups.csv").is_file() and Image.open(tmp_path / "groups.png").size[0] > 0
        assert len(list(folder.rglob("*.jpg"))) == 8  # a dry run moves nothing

    def test_moves_what_it_does_not_keep(self, tmp_path, folder, tiny_onnx):
        report = dedup_folder(
            folder, tmp_path / "g.json", model=model(tiny_onnx), keep="largest", move_to=tmp_path / "dups",
            params=DedupParams(k=3, accept=0.97, candidate=0.97), progress=False,
        )
        assert report.moved == 2
        assert sorted(p.relative_to(tmp_path / "dups").as_posix() for p in (tmp_path / "dups").rglob("*.jpg")) == [
            "copies/img0000.jpg", "copies/img0001.jpg"]  # the crops are the smaller files

    def test_lists_the_files_it_could_not_read(self, tmp_path, folder, tiny_onnx):
        (folder / "copies" / "broken.jpg").write_bytes(b"not an image")
        report = dedup_folder(folder, tmp_path / "g.json", model=model(tiny_onnx), verify=False, progress=False)
        assert "skipped 1" in report.summary() and tmp_path / "g.skipped.csv" in report.outputs
        lines = (tmp_path / "g.skipped.csv").read_text().splitlines()
        assert lines[0] == "path,reason" and lines[1].startswith("copies/broken.jpg,") and len(lines) == 2
        assert "copies/broken.jpg" not in json.loads((tmp_path / "g.json").read_text())
        (folder / "copies" / "broken.jpg").unlink()
        clean = dedup_folder(folder, tmp_path / "h.json", model=model(tiny_onnx), verify=False, progress=False)
        assert not (tmp_path / "h.skipped.csv").exists() and len(clean.outputs) == 2

    @pytest.mark.parametrize("options, message", [({"min_cover": 1.5}, "min_cover"), ({"hash_distance": -3}, "PDQ distance")])
    def test_refuses_bad_verification_settings_before_describing(self, tmp_path, folder, options, message, monkeypatch):
        import copyseek.graph.folders as folders

        monkeypatch.setattr(folders, "describe_folder", lambda *a, **k: pytest.fail("described before checking"))
        with pytest.raises(CopyseekError, match=message):
            dedup_folder(folder, tmp_path / "g.json", progress=False, **options)

    def test_refuses_to_move_into_the_folder(self, tmp_path, folder, tiny_onnx):
        with pytest.raises(CopyseekError, match="inside"):
            dedup_folder(folder, tmp_path / "g.json", model=model(tiny_onnx), move_to=folder / "dups", progress=False)

    def test_pdq_hashes_group_the_copies_of_a_graphic_that_sift_cannot(self, tmp_path, tiny_onnx):
        root = write_graphics(tmp_path / "graphics")
        every_edge_doubtful = DedupParams(k=3, accept=1.0, candidate=-1.0)
        report = dedup_folder(root, tmp_path / "g.json", model=model(tiny_onnx), params=every_edge_doubtful,
                              hash_distance=31, progress=False)
        groups = report.groups.members()
        assert [sorted(report.names[r] for r in rows) for rows in groups] == [["logo-small.jpg", "logo.jpg", "logo.png"]]
        assert report.confirmed_by["PDQ hash"] >= 2 and "by PDQ hash" in report.summary()
        sift_only = dedup_folder(root, tmp_path / "s.json", model=model(tiny_onnx), params=every_edge_doubtful,
                                 progress=False)  # the default
        assert sift_only.groups.n_groups == 0 and "PDQ hash" not in sift_only.confirmed_by

    def test_hash_verifier_threshold_and_quality_floor(self, tmp_path):
        root = write_graphics(tmp_path / "graphics")
        flat = Image.new("RGB", (64, 64), (128, 128, 128))
        flat.save(root / "flat.png")
        flat.save(root / "flat.jpg")
        paths = [root / name for name in ("logo.png", "logo.jpg", "other.png", "flat.png", "flat.jpg")]
        verify = HashVerifier(paths)
        assert verify(0, 1) and not verify(0, 2)
        assert not verify(3, 4)  # identical, but a featureless image's hash is under PDQ's quality floor
        assert not HashVerifier(paths, max_distance=0)(0, 1)  # the JPEG's hash differs by a few bits
        with pytest.raises(CopyseekError, match="PDQ distance"):
            HashVerifier(paths, max_distance=300)

    def test_local_verifier_rejects_two_photos_that_share_only_a_sticker(self, tmp_path, folder):
        # the same textured patch (an eighth of each side) pasted on two unrelated photos: its
        # keypoints match, but over a small share of the images
        sticker = Image.open(folder / "img0005.jpg").convert("RGB").resize((40, 30))
        pair = []
        for name in ("img0002.jpg", "img0003.jpg"):
            image = Image.open(folder / name).convert("RGB")
            image.paste(sticker, (20, 20))
            image.save(tmp_path / name, quality=92)
            pair.append(tmp_path / name)
        assert LocalVerifier(pair, min_inliers=6, min_cover=0.0)(0, 1)  # the sticker alone matches
        assert not LocalVerifier(pair, min_inliers=6)(0, 1)  # the default cover refuses it
        with pytest.raises(CopyseekError, match="min_cover"):
            LocalVerifier(pair, min_cover=1.5)

    def test_local_verifier_tells_a_copy_from_another_photo(self, folder):
        paths = [folder / "img0000.jpg", folder / "copies" / "img0000.jpg", folder / "img0003.jpg"]
        verify = LocalVerifier(paths, min_inliers=12)
        assert verify(1, 0) and not verify(2, 0)


def test_dedup_command(tmp_path, folder, tiny_onnx, capsys):
    code = main(["dedup", str(folder), "--output", str(tmp_path / "g.json"), "--model", model(tiny_onnx),
                 "--k", "3", "--accept", "0.97", "--no-verify", "-q"])
    assert code == 0
    assert "2 groups" in capsys.readouterr().out
    assert main(["dedup", str(folder), "--output", str(tmp_path / "missing" / "g.json"), "-q"]) == 2


def test_dedup_command_hash_distance(tmp_path, tiny_onnx, capsys):
    root = write_graphics(tmp_path / "graphics")
    common = ["dedup", str(root), "--model", model(tiny_onnx), "--k", "3", "--accept", "1", "--candidate", "-1", "-q"]
    assert main(common + ["--output", str(tmp_path / "a.json"), "--hash-distance", "31"]) == 0
    assert "1 groups" in capsys.readouterr().out
    assert main(common + ["--output", str(tmp_path / "b.json")]) == 0
    assert "0 groups" in capsys.readouterr().out
    assert main(common + ["--output", str(tmp_path / "c.json"), "--hash-distance", "300"]) == 2
    assert main(common + ["--output", str(tmp_path / "d.json"), "--min-cover", "2"]) == 2
