import numpy as np
import pytest
import torch

from copyseek.detect.hgd import (hands_on_loss, head_loss, head_maps, location_weights, make_distiller, normalised,
                                 sampled, teacher_outputs)
from copyseek.detect.model import DetectorNet, NetConfig
from copyseek.detect.targets import make_targets


def nets():
    torch.manual_seed(0)
    student = DetectorNet(NetConfig.preset("tiny"))
    teacher = DetectorNet(NetConfig.preset("tiny", widths=(8, 12, 16, 24, 32), neck=12))
    return student, teacher


def batch():
    t = make_targets(np.array([[8.0, 8.0, 40.0, 40.0]]), np.array([0]), 16, 4)
    return torch.rand(2, 3, 64, 64), {k: torch.from_numpy(np.stack([v, v])) for k, v in t.items()}


def test_hands_on_loss_is_zero_for_an_affine_copy_and_weighted_by_location():
    teacher = torch.randn(2, 6, 5, 5)
    uniform = torch.full((2, 1, 5, 5), 1 / 25)
    assert hands_on_loss(3 * teacher + 1, teacher, uniform) < 1e-6  # standardised: scale and shift do not count
    student = teacher.clone()
    student[:, :, 0, 0] += 5.0
    focused = torch.zeros(2, 1, 5, 5)
    focused[:, :, 4, 4] = 1.0
    assert hands_on_loss(student, teacher, focused) < hands_on_loss(student, teacher, uniform)
    assert torch.allclose(normalised(teacher).mean(dim=(0, 2, 3)), torch.zeros(6), atol=1e-5)
    assert torch.allclose(normalised(teacher).var(dim=(0, 2, 3), unbiased=False), torch.ones(6), atol=1e-4)


def test_location_weights_favour_objects_and_sum_to_one():
    evidence = torch.zeros(1, 1, 16, 16)
    evidence[:, :, 4:8, 4:8] = 1.0
    w = location_weights(evidence, (4, 4), focus=4.0)
    assert torch.allclose(w.sum(), torch.tensor(1.0)) and w[0, 0, 1, 1] == w.max() and w[0, 0, 3, 3] == w.min()


def test_hgd_pairs_every_stage_and_trains_the_adaptors():
    student, teacher = nets()
    images, targets = batch()
    hgd, plain = make_distiller("hgd", student, teacher), make_distiller("plain", student, teacher)
    assert len(hgd.adaptors) == 5 and len(plain.adaptors) == 1
    loss = hgd(images, student(images), targets)
    loss.backward()
    assert loss > 0 and all(p.grad is not None for p in hgd.adaptors.parameters())
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    assert "teacher" not in "".join(hgd.state_dict())  # nor saved with the student
    assert plain(images, student(images), targets) > 0


def test_head_loss_pulls_the_student_to_the_teachers_outputs_where_it_sees_objects():
    torch.manual_seed(0)
    teacher = torch.randn(2, 6, 5, 5)
    weight = torch.full((2, 1, 5, 5), 1 / 25)
    evidence = torch.zeros(2, 1, 5, 5)
    evidence[:, :, 1, 1] = 1.0
    student = teacher.clone().requires_grad_(True)
    floor = head_loss(student, teacher, weight, evidence)  # the soft targets' own entropy, no box error
    (grad,) = torch.autograd.grad(floor, student)
    assert torch.allclose(grad, torch.zeros_like(grad), atol=1e-7)  # the teacher's outputs are the optimum
    off_object = teacher.clone()
    off_object[:, 2:, 3, 3] += 1.0  # boxes wrong where the teacher sees nothing: free
    assert torch.allclose(head_loss(off_object, teacher, weight, evidence), floor)
    on_object = teacher.clone()
    on_object[:, 2:, 1, 1] += 1.0
    assert torch.allclose(head_loss(on_object, teacher, weight, evidence), floor + 1.0)
    hotter = teacher.clone()
    hotter[:, :2] += 2.0
    assert head_loss(hotter, teacher, weight, evidence) > floor + 0.01


def test_head_imitation_adds_to_either_distiller_and_trains_the_students_heads():
    student, teacher = nets()
    images, targets = batch()
    out = student(images)
    assert head_maps(out).shape == (2, 2 + 4, 16, 16)
    for kind in ("hgd", "plain"):
        without = make_distiller(kind, student, teacher).eval()
        with_head = make_distiller(kind, student, teacher, head=2.0).eval()
        with_head.load_state_dict(without.state_dict())
        t_out = teacher_outputs(teacher, images)
        extra = with_head(images, out, targets, t_out) - without(images, out, targets, t_out)
        evidence = torch.maximum(targets["heat"].amax(dim=1, keepdim=True), t_out["evidence"])
        weight = location_weights(evidence, (16, 16), 4.0)
        expected = 2.0 * head_loss(head_maps(out), t_out["heads"], weight, t_out["evidence"])
        assert torch.allclose(extra, expected, rtol=1e-4)
    student.zero_grad()
    make_distiller("hgd", student, teacher, head=1.0)(images, student(images), targets).backward()
    assert all(p.grad is not None for p in student.heads.parameters())
    with pytest.raises(Exception, match="head imitation"):
        make_distiller("hgd", student, teacher, head=-1.0)


def test_sampled_locations_estimate_the_whole_imitation_loss():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    index = torch.tensor([[0, 7], [19, 5]])
    picked = sampled(x, index)
    assert picked.shape == (2, 3, 2, 1) and picked[1, 2, 0, 0] == x[1, 2, 3, 4] and picked[0, 1, 1, 0] == x[0, 1, 1, 2]

    student, teacher = nets()
    images, targets = batch()
    with torch.no_grad():
        out, t_out = student(images), teacher_outputs(teacher, images)
    for kind in ("hgd", "plain"):
        whole = make_distiller(kind, student, teacher).eval()  # eval: the adaptors' batch norm is then fixed
        part = make_distiller(kind, student, teacher, locations=64).eval()
        part.load_state_dict(whole.state_dict())
        exact = whole(images, out, targets, t_out)
        estimates = torch.stack([part(images, out, targets, t_out) for _ in range(300)])
        assert not torch.allclose(estimates[0], estimates[1])  # stride 4 (256 locations) is sampled
        assert abs(estimates.mean() - exact) < 0.1 * exact
        everything = make_distiller(kind, student, teacher, locations=10_000).eval()
        everything.load_state_dict(whole.state_dict())
        assert torch.allclose(everything(images, out, targets, t_out), exact)  # no stage has more: all used
    with pytest.raises(Exception, match="locations"):
        make_distiller("hgd", student, teacher, locations=-1)


def pool_of(n):
    from copyseek.detect.data import Sample

    rng = np.random.default_rng(1)
    boxes = np.array([[4.0, 6.0, 40.0, 30.0]], np.float32)
    return [Sample(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), boxes, np.array([0])) for _ in range(n)]


def test_teacher_cache_holds_each_sample_and_its_mirror_and_refuses_another_teacher(tmp_path):
    from copyseek.detect.teacher_cache import TeacherCache
    from copyseek.errors import CopyseekError
    from copyseek.detect.train import collate

    student, teacher = nets()
    pool = pool_of(5)
    cache = TeacherCache.open_or_build(tmp_path / "cache", teacher, pool)
    assert len(cache) == 5 and cache.stages[0].dtype == np.float16 and cache.stages[0].shape[:2] == (5, 2)
    indices, mirrored = np.array([3, 0, 3]), np.array([True, False, False])
    samples = [pool[i].flipped() if m else pool[i] for i, m in zip(indices, mirrored)]
    images, targets = collate(samples, 16)
    live, cached = teacher_outputs(teacher.eval(), images), cache.lookup(indices, mirrored)
    for a, b in zip([*live["stages"], live["evidence"], live["heads"]],
                    [*cached["stages"], cached["evidence"], cached["heads"]]):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=2e-3, atol=2e-3)
    assert not torch.allclose(cached["stages"][0][0], cached["stages"][0][2], atol=1e-2)  # the mirror was run
    out = student(images)
    for kind in ("hgd", "plain"):
        distiller = make_distiller(kind, student, teacher)
        assert torch.allclose(distiller(images, out, targets), distiller(images, out, targets, cached), rtol=1e-3)
    assert TeacherCache.open_or_build(tmp_path / "cache", teacher, pool).meta == cache.meta  # reused, not rebuilt
    with pytest.raises(CopyseekError, match="another pool or teacher"):
        TeacherCache.open_or_build(tmp_path / "cache", nets()[1].train(), pool[:4])
    other = DetectorNet(NetConfig.preset("tiny", widths=(8, 12, 16, 24, 32), neck=12))
    with pytest.raises(CopyseekError, match="another pool or teacher"):
        TeacherCache.open_or_build(tmp_path / "cache", other, pool)
    (tmp_path / "cache" / "heads.npy").unlink()  # as a cache made before the head maps were kept
    with pytest.raises(CopyseekError, match="lacks heads"):
        TeacherCache.open_or_build(tmp_path / "cache", teacher, pool)


def test_int8_teacher_cache_is_half_the_size_within_one_percent_and_refuses_the_other_type(tmp_path):
    from copyseek.detect.teacher_cache import TeacherCache, quantized
    from copyseek.errors import CopyseekError

    _, teacher = nets()
    pool = pool_of(4)
    exact = TeacherCache.open_or_build(tmp_path / "f16", teacher, pool)
    small = TeacherCache.open_or_build(tmp_path / "i8", teacher, pool, dtype="int8")
    assert small.meta["dtype"] == "int8" and small.stages[0].dtype == np.int8 and exact.dtype == "float16"
    assert small.stages[0].nbytes * 2 == exact.stages[0].nbytes
    indices, mirrored = np.array([2, 1, 2]), np.array([False, True, True])
    a, b = exact.lookup(indices, mirrored), small.lookup(indices, mirrored)
    for x, y in zip([*a["stages"], a["evidence"], a["heads"]], [*b["stages"], b["evidence"], b["heads"]]):
        assert x.shape == y.shape and y.dtype == torch.float32
        assert float((x - y).abs().mean()) < 0.01 * float(x.abs().mean()) + 1e-6
        # no value is off by more than half a step of its channel's scale (plus float16's own rounding)
        step = x.abs().amax(dim=(2, 3), keepdim=True) / 127
        assert bool(((x - y).abs() <= 0.5 * step + 2e-3 * x.abs() + 1e-6).all())
    with pytest.raises(CopyseekError, match="stores int8, not float16"):
        TeacherCache.open_or_build(tmp_path / "i8", teacher, pool)
    with pytest.raises(CopyseekError, match="dtype must be one of"):
        TeacherCache.open_or_build(tmp_path / "x", teacher, pool, dtype="int4")
    values, scale = quantized(np.array([[[[0.0, -2.54], [1.27, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]], np.float32))
    assert values.tolist() == [[[[0, -127], [64, 0]]], [[[0, 0], [0, 0]]]] and np.allclose(scale, [[0.02], [0.0]])


def test_cache_read_at_drawn_locations_gives_the_loss_of_whole_maps_sampled_there(tmp_path):
    from copyseek.detect.teacher_cache import TeacherCache
    from copyseek.detect.train import collate
    from copyseek.detect.hgd import sampled

    student, teacher = nets()
    pool = pool_of(4)
    indices, mirrored = np.array([1, 3, 1]), np.array([False, False, True])
    images, targets = collate([pool[i].flipped() if m else pool[i] for i, m in zip(indices, mirrored)], 16)
    out = student(images)
    distiller = make_distiller("hgd", student, teacher, locations=5)
    sizes = [tuple(m.shape[2:]) for m in out["stages"]]
    torch.manual_seed(3)
    drawn = distiller.draw_locations(len(indices), sizes)
    assert all(v is None or (v.shape == (3, 5) and len(set(v[0].tolist())) == 5) for v in drawn.values())
    assert any(v is None for v in drawn.values()) and any(v is not None for v in drawn.values())  # small stages whole
    for dtype in ("float16", "int8"):
        cache = TeacherCache.open_or_build(tmp_path / dtype, teacher, pool, dtype=dtype)
        whole, part = cache.lookup(indices, mirrored), cache.lookup(indices, mirrored, drawn)
        for i, at in drawn.items():
            expected = whole["stages"][i] if at is None else sampled(whole["stages"][i], at)
            assert part["stages"][i].shape == expected.shape and torch.allclose(part["stages"][i], expected)
        torch.manual_seed(3)  # forward draws the same locations itself from the same seed
        assert torch.allclose(distiller(images, out, targets, part, drawn), distiller(images, out, targets, whole), rtol=1e-5)
