from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image

from copyseek.errors import CopyseekError
from copyseek.graph.dedup import DedupParams, contact_sheet, duplicates_json, find_groups, keep_plan, write_groups_csv
from tests.graph.families import families


@pytest.fixture(scope="module")
def data():
    x, family = families(n_families=15, size=4, dim=64, noise=0.25, seed=2)
    singles, _ = families(n_families=10, size=1, dim=64, seed=9)
    return np.vstack([x, singles]), np.concatenate([family, -1 - np.arange(10)])


def same_group_pairs(labels):
    return {(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] >= 0 and labels[i] == labels[j]}


class TestFindGroups:
    def test_recovers_families_and_leaves_singletons_alone(self, data):
        x, family = data
        groups = find_groups(x, DedupParams(k=5, accept=0.7, candidate=0.7))
        assert same_group_pairs(groups.labels) == same_group_pairs(family)
        assert (groups.labels[family < 0] == -1).all()
        assert groups.n_groups == 15
        assert (groups.confidence[family >= 0] >= 0.7).all() and (groups.confidence[family < 0] == 0).all()

    def test_groups_are_numbered_largest_first(self):
        x = np.eye(8, dtype=np.float32)[[0, 0, 1, 1, 1, 2, 3]]
        groups = find_groups(x, DedupParams(k=3, accept=0.9, candidate=0.9))
        assert groups.labels.tolist() == [1, 1, 0, 0, 0, -1, -1]
        assert [m.tolist() for m in groups.members()] == [[2, 3, 4], [0, 1]]

    def test_doubtful_edges_need_verification(self, data):
        x, family = data
        params = DedupParams(k=5, accept=0.99, candidate=0.5)
        calls = []

        def verify(i, j):
            calls.append((i, j))
            return family[i] == family[j] and family[i] % 2 == 0  # confirms even families only

        groups = find_groups(x, params, verify)
        assert calls and groups.verified[0] == len(calls)
        grouped = set(family[groups.labels >= 0])
        assert grouped == {f for f in range(15) if f % 2 == 0}
        assert find_groups(x, params).n_groups == 0  # without a verifier nothing under accept is kept

    def test_a_verified_pair_does_not_merge_two_established_groups(self):
        # two groups of three (accepted edges) and a single image, all doubtful across: a verified
        # pair may attach the single image, but not merge the two groups, unless merge_limit is 0
        x = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0.6, 0.8, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]], np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        groups = find_groups(x, DedupParams(k=6, accept=0.99, candidate=0.5), lambda i, j: True)
        assert sorted(map(len, groups.members())) == [3, 4] and groups.refused > 0
        assert groups.labels[3] == groups.labels[4] != groups.labels[0]  # it joins the more similar group
        merged = find_groups(x, DedupParams(k=6, accept=0.99, candidate=0.5, merge_limit=0), lambda i, j: True)
        assert groups.verified == merged.verified and merged.n_groups == 1 and merged.refused == 0
        strict = find_groups(x, DedupParams(k=6, accept=0.99, candidate=0.5, merge_limit=1), lambda i, j: True)
        assert sorted(map(len, strict.members())) == [3, 4]  # a single image still joins

    def test_empty_input(self):
        assert find_groups(np.zeros((0, 4), np.float32)).n_groups == 0

    @pytest.mark.parametrize("options", [{"k": 0}, {"accept": 0.3, "candidate": 0.5}, {"accept": 1.5}, {"merge_limit": -1}])
    def test_bad_parameters_are_refused(self, options):
        with pytest.raises(CopyseekError):
            DedupParams(**options)


class TestOutputs:
    def test_json_has_every_file_and_its_group_best_first(self, data):
        x, family = data
        groups = find_groups(x, DedupParams(k=5, accept=0.7, candidate=0.7))
        names = [f"dir/{i}.jpg" for i in range(len(x))]
        result = duplicates_json(groups, names, x)
        assert list(result) == names
        assert result[names[-1]] == []
        listed = result[names[0]]
        assert {n for n, _ in listed} == {names[j] for j in range(1, 4)}
        scores = [s for _, s in listed]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(float(x[0] @ x[int(listed[0][0][4:-4])]), abs=1e-4)

    def test_keep_policies(self, tmp_path):
        x = np.eye(4, dtype=np.float32)[[0, 0, 0, 1]]
        groups = find_groups(x, DedupParams(k=3, accept=0.9, candidate=0.9))
        paths = [tmp_path / f"{name}.jpg" for name in ("c", "a", "b", "d")]
        for age, (path, size) in enumerate(zip(paths, (10, 30, 20, 5))):
            path.write_bytes(b"x" * size)
            os.utime(path, (1000 - age, 1000 - age))
        assert keep_plan(groups, paths, "largest").tolist() == [False, True, False, True]
        assert keep_plan(groups, paths, "first").tolist() == [False, True, False, True]
        assert keep_plan(groups, paths, "oldest").tolist() == [False, False, True, True]
        assert keep_plan(groups, paths, "largest", pixels=[9, 1, 1, 1]).tolist() == [True, False, False, True]
        with pytest.raises(CopyseekError, match="newest"):
            keep_plan(groups, paths, "newest")

    def test_groups_csv_and_contact_sheet(self, tmp_path, data):
        x, _ = data
        groups = find_groups(x, DedupParams(k=5, accept=0.7, candidate=0.7))
        names = [f"{i}.jpg" for i in range(len(x))]
        keep = np.ones(len(x), bool)
        write_groups_csv(tmp_path / "g.csv", groups, names, keep)
        with open(tmp_path / "g.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == int((groups.labels >= 0).sum())
        assert set(rows[0]) == {"group", "path", "confidence", "keep"}
        sheet = contact_sheet(groups, lambda row: np.full((40, 60, 3), row % 255, np.uint8), tmp_path / "s.png", keep, max_groups=3)
        assert Image.open(sheet).size[1] > 3 * 100
