import numpy as np
import pytest
import torch

from copyseek.attack.mismatch import AttackParams, TargetedMismatch, gaussian_blur, model_view, targeted_mismatch
from copyseek.attack.models import ScriptedModel
from copyseek.errors import CopyseekError

# A few plain steps (no goal, budget or decay): the tiny random model describes every picture alike
# (cosine ~0.99, past the default goal), and the closeness terms must count from the first change.
FEW = dict(sizes=(48,), steps=8, lr=0.01, goal=0.0, budget=0.0, schedule="constant")


def cosine(attack, a, b, size=48):
    return float(np.dot(attack.describe(a, size), attack.describe(b, size)))


class TestAttack:
    @pytest.mark.parametrize("loss", ["global", "pooling", "hist", "tensor", "global+ssim"])
    def test_lowers_the_descriptor_distance_in_a_few_steps(self, tiny_model, pictures, loss):
        target, carrier = pictures
        attack = TargetedMismatch(tiny_model, AttackParams(loss=loss, **FEW)).fit(target)
        adversarial = attack.transform(carrier)
        history = attack.result_.history
        assert history[-1] < history[0]
        assert 1 - cosine(attack, adversarial, target) < 1 - cosine(attack, carrier, target)

    def test_result_is_an_image_of_the_carrier_size_in_range(self, tiny_model, pictures):
        target, carrier = pictures
        attack = TargetedMismatch(tiny_model, AttackParams(noise=0.5, **FEW)).fit(target)
        adversarial = attack.transform(carrier)
        assert adversarial.shape == carrier.shape and adversarial.dtype == np.uint8
        image = attack.result_.image
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0  # clamped, although noise 0.5 overshoots

    def test_carrier_term_keeps_the_result_closer_to_the_carrier(self, tiny_model, pictures):
        target, carrier = pictures
        free = targeted_mismatch(tiny_model, target, carrier, AttackParams(loss="global", **FEW))
        held = targeted_mismatch(tiny_model, target, carrier, AttackParams(loss="global+carrier@1000", **FEW))
        change = lambda x: np.abs(x.astype(int) - carrier).mean()  # noqa: E731
        assert change(held) < change(free)

    def test_multi_resolution_and_jitter_see_every_size(self, tiny_model, pictures):
        target, carrier = pictures
        attack = TargetedMismatch(tiny_model, AttackParams(sizes=(40, 56), jitter=3, steps=4, lr=0.01, goal=0.0)).fit(target)
        attack.transform(carrier)
        assert {40, 56} <= set(attack.references_) and len(attack.references_) > 2
        assert all(abs(s - 40) <= 3 or abs(s - 56) <= 3 for s in attack.references_)

    def test_same_seed_same_result_other_seed_other_result(self, tiny_model, pictures):
        target, carrier = pictures
        params = AttackParams(noise=0.05, jitter=4, **FEW)
        first = targeted_mismatch(tiny_model, target, carrier, params)
        again = targeted_mismatch(tiny_model, target, carrier, params)
        other = targeted_mismatch(tiny_model, target, carrier, AttackParams(noise=0.05, jitter=4, seed=1, **FEW))
        assert np.array_equal(first, again) and not np.array_equal(first, other)

    def test_goal_stops_the_pull_and_lets_the_carrier_term_restore_the_image(self, tiny_model, pictures):
        target, carrier = pictures
        params = dict(loss="global+carrier@100", sizes=(48,), steps=30, lr=0.02, budget=0.0)
        free = TargetedMismatch(tiny_model, AttackParams(goal=0.0, **params)).fit(target)
        free.transform(carrier)
        reached = 1 - min(free.result_.model_history)  # the best cosine the free attack reaches
        goal = 1 - (1 - reached) * 3  # a goal well short of it
        held = TargetedMismatch(tiny_model, AttackParams(goal=goal, **params)).fit(target)
        held.transform(carrier)
        change = lambda attack: float((attack.result_.image - torch.from_numpy(carrier).permute(2, 0, 1) / 255).abs().mean())  # noqa: E731
        assert change(held) < change(free)
        assert min(held.result_.model_history) <= 1 - goal  # it did get there

    def test_budget_lets_the_attack_change_the_carrier_down_to_it(self, tiny_model, pictures):
        target, carrier = pictures
        params = dict(loss="global+carrier@1000", sizes=(48,), steps=10, lr=0.02, goal=0.0)
        runs = {}
        for budget in (0.0, 0.01):
            attack = TargetedMismatch(tiny_model, AttackParams(budget=budget, **params)).fit(target)
            attack.transform(carrier)
            runs[budget] = attack.result_
        held, free = runs[0.0], runs[0.01]
        assert min(free.model_history) < min(held.model_history)  # within the budget the pull is unopposed
        mse = lambda r: float((r.image - torch.from_numpy(carrier).permute(2, 0, 1) / 255).pow(2).mean())  # noqa: E731
        assert mse(held) < mse(free) <= 0.01 * 1.5  # and it stays about within the budget

    def test_lowres_change_is_smooth_and_still_moves_the_descriptor(self, tiny_model, pictures):
        target, carrier = pictures
        attack = TargetedMismatch(tiny_model, AttackParams(lowres=8, loss="global", sizes=(48,), steps=8, lr=0.05, goal=0.0)).fit(target)
        adversarial = attack.transform(carrier)
        assert adversarial.shape == carrier.shape
        assert cosine(attack, adversarial, target) > cosine(attack, carrier, target)
        change = attack.result_.image - torch.from_numpy(carrier).permute(2, 0, 1) / 255
        per_pixel = TargetedMismatch(tiny_model, AttackParams(loss="global", sizes=(48,), steps=8, lr=0.05, goal=0.0)).fit(target)
        per_pixel.transform(carrier)
        full = per_pixel.result_.image - torch.from_numpy(carrier).permute(2, 0, 1) / 255
        roughness = lambda d: float((d[:, :, 1:] - d[:, :, :-1]).abs().mean() / d.abs().mean())  # noqa: E731
        assert roughness(change) < 0.5 * roughness(full)

    def test_cosine_schedule_ends_with_small_steps(self, tiny_model, pictures):
        target, carrier = pictures
        images = []
        for schedule in ("constant", "cosine"):
            attack = TargetedMismatch(tiny_model, AttackParams(**{**FEW, "loss": "global", "schedule": schedule})).fit(target)
            attack.transform(carrier)
            images.append(attack.result_.image)
        assert not torch.equal(*images)
        # the first step is the same (full lr), so only the later, shorter steps differ
        first = [TargetedMismatch(tiny_model, AttackParams(loss="global", schedule=s, sizes=(48,), steps=1, lr=0.01, goal=0.0))
                 .fit(target) for s in ("constant", "cosine")]
        assert np.array_equal(*(a.transform(carrier) for a in first))

    def test_transform_before_fit(self, tiny_model, pictures):
        with pytest.raises(CopyseekError, match="fit"):
            TargetedMismatch(tiny_model).transform(pictures[1])

    def test_activation_losses_need_a_model_with_activations(self, tiny_model):
        scripted = ScriptedModel(torch.jit.trace(tiny_model.descriptor, torch.rand(1, 3, 32, 32) * 255), "ts", 48, "nhwc-uint8")
        with pytest.raises(CopyseekError, match="activations"):
            TargetedMismatch(scripted, AttackParams(loss="pooling", **FEW))


class TestViews:
    def test_model_view_resizes_to_a_square_in_0_255(self):
        image = torch.full((1, 3, 30, 50), 0.5)
        view = model_view(image, 20)
        assert view.shape == (1, 3, 20, 20) and torch.allclose(view, torch.full_like(view, 127.5))

    def test_blur_keeps_constants_and_smooths_an_edge(self):
        image = torch.zeros(1, 3, 9, 9)
        image[..., 4:] = 1.0
        blurred = gaussian_blur(image, 1.0)
        assert torch.allclose(gaussian_blur(torch.ones(1, 3, 9, 9), 1.0), torch.ones(1, 3, 9, 9))
        assert 0.0 < blurred[0, 0, 0, 3] < 0.5 < blurred[0, 0, 0, 4] < 1.0


class TestParams:
    def test_from_dict_refuses_unknown_keys(self):
        with pytest.raises(CopyseekError, match="unknown attack option.*stpes"):
            AttackParams.from_dict({"stpes": 10})
        assert AttackParams.from_dict({"steps": 10, "sizes": [96, 128]}).sizes == (96, 128)

    @pytest.mark.parametrize("values, message", [
        ({"steps": 0}, "steps"), ({"lr": 0}, "learning rate"), ({"sizes": ()}, "sizes"), ({"sizes": (8,)}, "attack size"),
        ({"jitter": 100}, "jitter"), ({"noise": 2.0}, "noise"), ({"blur": -1.0}, "blur"), ({"loss": "foo"}, "unknown attack loss"),
        ({"schedule": "linear"}, "schedule"), ({"goal": 1.5}, "goal"), ({"budget": -0.1}, "budget"), ({"lowres": 4}, "lowres"),
    ])
    def test_bad_values_are_named(self, values, message):
        with pytest.raises(CopyseekError, match=message):
            AttackParams(**values)

    def test_spec_names_what_changes_results(self):
        text = AttackParams(loss="global", sizes=(128, 160), jitter=8, blur=0.5).spec()
        assert "global" in text and "128+160" in text and "jitter 8" in text and "blur 0.5" in text
        text = AttackParams(schedule="cosine", goal=0.97, budget=0.07, lowres=160).spec()
        assert "cosine" in text and "goal 0.97" in text and "budget 0.07" in text and "lowres 160" in text
