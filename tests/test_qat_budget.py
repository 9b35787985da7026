"""Budget-aware QAT: the plan is the allocator's for the budget, the trainer trains toward it
(logged, saved, resumed), the build's ``qat`` contender ships exactly the grid the weights were
trained onto, and a checkpoint's plan is untrusted input. What it buys is a measurement:
``golfpack bench qat`` (docs/benchmarks.md)."""
from __future__ import annotations

import re

import pytest
import torch

from golfpack.codec.decoders.grid import ClipRule, Grid, row_scales

from golfpack.trainer.qat import fake_quantize, noise_quantize
from golfpack.codec.encoders.intq import column_scales
from golfpack.codec.contenders import Allocation, pick
from golfpack.codec.fill import fill
from golfpack.codec.host import decode_state_dict
from golfpack.codec.qat_plan import grid_planner, plan_grids
from golfpack.codec.spec import load_spec
from golfpack.trainer.roles import tensor_roles
from golfpack.model.builders import GPT_BUILDER, build_model
from golfpack.model.checkpoint import load_checkpoint, save_checkpoint
from golfpack.model.gpt import CastedLinear
from golfpack.packer.bench.qat import QatRun, format_qat, own_pace
from golfpack.packer.encode import read_plan
from golfpack.trainer.calibration_files import calib_path, collect_sensitivity, load_hessians
from golfpack.trainer.qat import QatRule, parse_rules, plan_rules
from golfpack.trainer.train import train

from .conftest import golfpack
from .test_trainer import tiny_cfg


@pytest.fixture(scope="module")
def weights(trained, train_glob):
    ckpt = load_checkpoint(trained)
    model = ckpt.build_model()
    sens = collect_sensitivity(model, train_glob, 4096, 128, skip=2048, progress=False)
    spec = load_spec("default").with_roles(tensor_roles(model))
    return ckpt.state_dict, spec, load_hessians(calib_path(trained)), sens


def test_a_plan_fits_its_budget_and_a_smaller_budget_buys_coarser_grids(weights):
    state, spec, hessians, sens = weights
    params = sum(t.numel() for t in state.values())
    plans = {b: plan_grids(state, hessians, sens, spec=spec, budget=round(b * params / 8)) for b in (2.5, 4.5)}
    for b, plan in plans.items():
        print(f"{b} bits/param: {plan.predicted_bytes:,} of {plan.budget:,} bytes predicted; {plan.summary()}")
        assert plan.predicted_bytes <= plan.budget
        assert not any(c.lqer or c.rdoq for c in plan.grids.values())  # a fake quantizer trains toward plain grids
    mean_bits = {b: sum(c.bits for c in p.grids.values()) / len(p.grids) for b, p in plans.items()}
    assert mean_bits[2.5] < mean_bits[4.5]
    again = plan_grids(state, hessians, sens, spec=spec, budget=plans[2.5].budget)
    assert plan_rules(again) == plan_rules(plans[2.5])  # deterministic


def test_the_trainer_plans_at_the_switch_and_again_and_resumes_with_the_plan(tmp_path, train_glob):
    lines = []
    cfg = tiny_cfg(tmp_path / "a", train_glob, "iterations=6", "qat_start_frac=0.5", "qat_budget=40000",
                   "qat_refresh=1", "qat_calib_tokens=1024")
    train(cfg, echo=lines.append, save_every=4, planner=grid_planner)
    plans = [ln for ln in lines if ln.startswith("qat:plan")]
    assert [re.match(r"qat:plan (\d)/2 step:(\d)", ln).groups() for ln in plans] == [("1", "3"), ("2", "5")], plans
    assert all(re.search(r"budget:40000 predicted_bytes:\d+ embedding:\d+b/\S+ matrices:", ln) for ln in plans)
    assert re.search(r"plan_time:\d+ms$", plans[0]) and any(ln.startswith("qat:on step:3") for ln in lines)
    final = load_checkpoint(tmp_path / "a" / "final.pt")
    assert final.meta["qat_plan"] == final.resume["qat_rules"] and final.resume["qat_plans"] == 2
    assert all(r.bits in range(3, 9) for r in parse_rules(final.meta["qat_plan"]))
    # resumed after the first plan: the second is made at the same step, and the weights match
    resumed = tiny_cfg(tmp_path / "a", train_glob, "iterations=6", "qat_start_frac=0.5", "qat_budget=40000",
                       "qat_refresh=1", "qat_calib_tokens=1024", f"out_dir={tmp_path / 'b'}")
    more = []
    train(resumed, resume=tmp_path / "a" / "step_000004.pt", echo=more.append, planner=grid_planner)
    assert [ln.split(" plan_time")[0] for ln in more if ln.startswith("qat:plan")] == [plans[1].split(" plan_time")[0]]
    again = load_checkpoint(tmp_path / "b" / "final.pt")
    assert all(torch.equal(final.state_dict[k], again.state_dict[k]) for k in final.state_dict)


@pytest.mark.parametrize("embedding, quantized", [(False, 12), (True, 13)])
def test_budget_aware_qat_trains_the_embedding_float_unless_asked(tmp_path, train_glob, embedding, quantized):
    """The plan still allocates the tied embedding's bytes; only its fake quantizer is left off
    (12 CastedLinears + the tied embedding are the targets)."""
    lines = []
    cfg = tiny_cfg(tmp_path, train_glob, "iterations=4", "qat_start_frac=0.5", "qat_budget=40000",
                   "qat_calib_tokens=1024", f"qat_embedding={str(embedding).lower()}")
    train(cfg, echo=lines.append, planner=grid_planner)
    assert any(re.match(rf"qat:on step:2 .*quantized_weights:{quantized}$", ln) for ln in lines), lines
    plan = read_plan(load_checkpoint(tmp_path / "final.pt").meta["qat_plan"])
    assert "tok_emb.weight" in plan  # planned (its bytes are the budget's) either way


def test_a_budget_without_a_switch_is_refused(tmp_path, train_glob):
    with pytest.raises(ValueError, match="qat_start_frac below 1"):
        train(tiny_cfg(tmp_path, train_glob, "iterations=2", "qat_budget=40000"), planner=grid_planner)
    proc = golfpack("train", "--budget", "--set", "iterations=2")
    assert proc.returncode != 0 and "give --qat-start" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("colscale", [0.0, 0.5])
def test_the_qat_contender_ships_the_trained_grid_exactly(weights, colscale):
    """Weights that sit on the planned grids (as QAT leaves its forward) come back bit for bit
    from the ``qat`` contender (round-to-nearest), where GPTQ would move them; its predicted
    rise is zero, so it ships. With column scales the build recomputes them from its own
    calibration, here the same as the plan's."""
    state, spec, hessians, sens = weights
    plan = {n: Grid(4, "absmax", colscale) for n in state if state[n].ndim == 2 and spec.rule_for(n).allocate}

    def cols(n):
        return column_scales(torch.diagonal(hessians[n]), colscale).float() if colscale else None

    on_grid = {n: fake_quantize(t.float(), 4, ClipRule(), cols(n)) if n in plan else t for n, t in state.items()}
    container = fill(on_grid, spec, hessians, 10**6, {}, sensitivity=sens, trained=plan).container
    decoded, meta = decode_state_dict(container)
    assert all(torch.equal(decoded[n], on_grid[n]) for n in plan)
    assert all(meta["allocation"][n]["bits"] == 4 for n in plan)


@pytest.mark.parametrize("raw, why", [
    ("x", "must be a list"), ([["w", 9, "absmax"]], "malformed"), ([["w", 4, "evil:1"]], "malformed"),
    ([["w", True, "absmax"]], "malformed"), ([["w", 4]], "malformed"), ([[1, 4, "absmax"]], "malformed"),
    ([["w" * 5000, 4, "absmax"]], "malformed"), ([["w", 4, "absmax"]] * 70000, "must be a list"),
    ([["w", 4, "absmax", 0.5]], "malformed"), ([["w", 4, "absmax", 0.0, [1.0]]], "malformed"),
    ([["w", 4, "absmax", 1.5, [1.0]]], "malformed"), ([["w", 4, "absmax", 0.5, []]], "malformed"),
    ([["w", 4, "absmax", 0.5, "1"]], "malformed"), ([["w", 4, "absmax", 0.5, [1.0] * 70000]], "malformed"),
    ([["w", 4, "absmax", 0.5, [1e300]]], "malformed"), ([["w", 4, "absmax", 0.5, [1e-30]]], "malformed"),
    ([[f"w{i}", 4, "absmax"] for i in range(5000)], "must be a list"),
    ([["w" * 900 + str(i), 4, "absmax"] for i in range(400)], "characters together")])
def test_a_checkpoint_plan_is_checked_before_use(raw, why):
    with pytest.raises(ValueError, match=why):
        read_plan(raw)
    assert read_plan([["w", 4, "sdclip:12.85"], ["v", 5, "absmax", 0.5, [1.0, 2.0]]]) == \
        {"w": Grid(4, "sdclip:12.85"), "v": Grid(5, "absmax", 0.5)} and read_plan(None) is None


def test_qat_noise_stays_within_its_width_of_the_grid_step_and_passes_the_gradient():
    torch.manual_seed(0)
    w = (torch.randn(16, 64) * torch.linspace(0.1, 2.0, 16)[:, None]).requires_grad_()
    rule = ClipRule.parse("sdclip:5")
    out = noise_quantize(w, 3, rule, 0.5)
    step = row_scales(w, 3, rule).float()[:, None]
    d = (out - w).detach() / step
    assert d.abs().max() <= 0.25 + 1e-6 and d.abs().max() > 0.2 and d.std() > 0.1  # uniform over +-0.25 steps
    assert not torch.equal(out, noise_quantize(w, 3, rule, 0.5))  # a new draw each forward
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    cols = torch.linspace(0.05, 4.0, 64)  # with column scales each entry's step is its row's times its column's
    out = noise_quantize(w, 3, rule, 0.5, cols)
    step = row_scales(w.detach() / cols, 3, rule).float()[:, None] * cols[None, :]
    d = (out - w).detach() / step
    assert d.abs().max() <= 0.25 + 1e-5 and d.abs().max() > 0.2 and d.std() > 0.1


def test_qat_noise_outside_its_range_is_refused(tmp_path, train_glob):
    from golfpack.trainer.config import TrainConfig
    from golfpack.trainer.train import train

    for bad in (-0.1, 1.5):
        cfg = TrainConfig(train_files=train_glob, val_files=train_glob, out_dir=str(tmp_path), qat_noise=bad)
        with pytest.raises(ValueError, match="qat_noise"):
            train(cfg)


def test_qat_rules_round_trip_through_their_json_form():
    rules = parse_rules([["blocks.*", 5, "sdclip:10"], ("tok_emb.weight", 7, "absmax", 0.5, [1.0, 0.25])])
    assert rules == [QatRule("blocks.*", Grid(5, "sdclip:10")),
                     QatRule("tok_emb.weight", Grid(7, "absmax", 0.5), (1.0, 0.25))]
    assert parse_rules(r.to_json() for r in rules) == rules


@pytest.mark.parametrize("tail", [[0.5], [0.0, [1.0]], [2.0, [1.0]], [0.5, []], [0.5, [1.0, -1.0]],
                                  [0.5, [float("inf")]], [0.5, ["1"]], [0.5, [True]], [0.5, [1.0] * 70000]])
def test_qat_rules_column_scales_are_checked(tail):
    """A resumed checkpoint's rules are read back: column scales must be well formed and bounded."""
    with pytest.raises(ValueError, match="QAT rule"):
        parse_rules([["w", 4, "absmax", *tail]])


@pytest.mark.parametrize("rule", [["w", True, "absmax"], ["w", 9, "absmax"], ["w", 1, "absmax"], ["w", 4.0, "absmax"],
                                  ["w", "4", "absmax"], ["w" * 1001, 4, "absmax"], [None, 4, "absmax"],
                                  ["w", 4, 12.85], ["w", 4, "x" * 40], "w 4 absmax", ["w", 4]])
def test_qat_rules_are_checked(rule):
    """The same rules come from configs, plans and (untrusted) checkpoints: one strict reader."""
    with pytest.raises(ValueError, match="QAT rule"):
        parse_rules([rule])


def test_too_many_qat_rules_are_refused():
    with pytest.raises(ValueError, match="more than"):
        parse_rules([["w", 4, "absmax"]] * 70000)


@pytest.mark.parametrize("rules", [7, None, "w 4 absmax", {"w": [4, "absmax"]}, 1.5])
def test_qat_rules_that_are_no_list_are_refused_as_bad_input(rules):
    """A resume state's ``qat_rules`` may be anything a checkpoint can hold: one line, not a TypeError."""
    with pytest.raises(ValueError, match="QAT rules must be a list"):
        parse_rules(rules)


def test_a_resumed_checkpoint_with_crafted_rules_is_refused(tmp_path, train_glob):
    """A checkpoint's resume state names the grids QAT trains toward; a crafted one (63-bit
    grids) is refused when it is read, and nothing is written."""
    cfg = tiny_cfg(tmp_path / "a", train_glob, "iterations=4", "qat_start_frac=0.5", "qat_budget=40000",
                   "qat_calib_tokens=1024")
    train(cfg, save_every=2, echo=lambda _: None, planner=grid_planner)
    ckpt = load_checkpoint(tmp_path / "a" / "step_000002.pt")
    ckpt.resume["qat_rules"] = [["*", 63, "absmax"]]
    save_checkpoint(tmp_path / "crafted.pt", ckpt)
    again = tiny_cfg(tmp_path / "b", train_glob, "iterations=4", "qat_start_frac=0.5", "qat_budget=40000",
                     "qat_calib_tokens=1024")
    with pytest.raises(ValueError, match="QAT rule"):
        train(again, resume=tmp_path / "crafted.pt", echo=lambda _: None, planner=grid_planner)
    assert not (tmp_path / "b" / "final.pt").exists()


def test_a_column_scaled_rule_trains_toward_its_grid_and_must_fit_the_weight():
    from golfpack.trainer.qat import set_qat

    model = build_model(GPT_BUILDER, {"vocab_size": 64, "num_layers": 1, "model_dim": 16, "num_heads": 2,
                                "num_kv_heads": 1, "mlp_mult": 2})
    name, module = next((f"{n}.weight", m) for n, m in model.named_modules() if isinstance(m, CastedLinear))
    cols = [0.25 + j / 8 for j in range(module.weight.shape[1])]
    assert set_qat(model, [[name, 3, "absmax", 0.5, cols]], True) == [name]
    w = module.weight.detach().float()
    assert torch.equal(module.weight_fn(module.weight).detach(), fake_quantize(w, 3, ClipRule(), torch.tensor(cols)))
    assert not torch.equal(module.weight_fn(module.weight).detach(), fake_quantize(w, 3, ClipRule()))
    with pytest.raises(ValueError, match="has 3 column scales for a weight of shape"):
        set_qat(model, [[name, 3, "absmax", 0.5, [1.0, 1.0, 1.0]]], True)


def test_a_plan_gives_column_scales_where_a_matrix_inputs_are_uneven(weights):
    """A matrix driven through a few inputs (its Hessian's diagonal scaled up there) gets a
    column-scaled grid, whose scales come with its rule, one per column, as the trainer reads it."""
    state, spec, hessians, sens = weights
    name = next(n for n in sorted(state) if state[n].ndim == 2 and n in hessians and spec.rule_for(n).allocate
                and spec.roles.get(n) != "embedding")
    h = hessians[name].clone()
    boost = torch.ones(h.shape[0])
    boost[:2] = 300.0
    hot = {**hessians, name: h * boost.sqrt()[:, None] * boost.sqrt()[None, :]}
    w = state[name].float() / boost.sqrt()[None, :]  # trained weights shrink on inputs driven harder
    params = sum(t.numel() for t in state.values())
    plan = plan_grids({**state, name: w}, hot, None, spec=spec, budget=round(3.5 * params / 8))
    print(plan.summary())
    assert plan.grids[name].colscale > 0 and "/cols:" in plan.summary()
    rule = next(r for r in parse_rules([r.to_json() for r in plan_rules(plan)]) if r.pattern == name)
    expected = column_scales(torch.diagonal(hot[name]), plan.grids[name].colscale).float().tolist()
    assert rule.grid == plan.grids[name].grid and list(rule.cols) == expected


def test_a_runs_own_pace_is_read_from_its_steps_before_qat():
    log = ("step:1/300 train_loss:6.9 train_time:500ms step_avg:500.00ms\n"
           "step:200/300 train_loss:4.1 train_time:40000ms step_avg:200.00ms\n"
           "qat:plan 1/2 step:210 budget:1 predicted_bytes:1 x plan_time:1698ms\n"
           "step:225/300 train_loss:4.5 train_time:48000ms step_avg:213.33ms\n")
    assert own_pace(log, 210) == 200.0 and own_pace(log, 199.9) == 500.0
    with pytest.raises(ValueError, match="no step line before step 0.5"):
        own_pace(log, 0.5)


def test_the_bench_table_reports_what_budget_aware_qat_recovered():
    runs = [QatRun("s", "none", None, 100, 10, 1000.0, 0.0, 100.0, 2.0, {2.5: (50, 2.2)}),
            QatRun("s", "rules", None, 100, 10, 1000.0, 0.0, 100.0, 2.0, {2.5: (50, 2.15)}),
            QatRun("s", "budget", 2.5, 100, 10, 1050.0, 40.0, 80.0, 2.05, {2.5: (50, 2.1)})]
    text = format_qat(runs)
    print(text)
    assert "budget-aware QAT's artifact improves on no-QAT's by +0.10000 bpb, +0.50 of the export's cost " \
           "(0.20000); on rules' by +0.05000" in text
    assert re.search(r"budget-2.5\s+1.1\s+1.050\s+1.312\s+0.0\s+2.05000\s+2.5\s+50\s+2.10000\s+\+0.05000", text)


def test_the_trained_grids_ship_when_they_score_lower_than_the_predicted_choice():
    def run(name, predicted, windows):
        return Allocation(b"", {}, name=name, loss=sum(windows) / len(windows), windows=windows, predicted=predicted)

    fill_, qat = run("fill", 0.001, [4.0, 4.1, 4.2]), run("qat", 0.01, [3.99, 4.09, 4.19])
    records = run("records", 0.02, [4.05, 4.15, 4.25])
    assert pick([fill_, qat, records])[0] is qat and "the trained grids" in pick([fill_, qat, records])[1]
    worse = run("qat", 0.0001, [4.01, 4.11, 4.21])  # its prediction does not count: its score does
    assert pick([fill_, worse, records])[0] is fill_


def test_no_config_names_the_code_that_plans():
    """A config (a checkpoint's, a records folder's) cannot choose what the trainer imports to
    plan: there is no such key, and the planner is golfpack's by a fixed name."""
    from golfpack.trainer.config import ConfigError, load_config
    from golfpack.trainer.qat import load_planner

    with pytest.raises(ConfigError, match="unknown config key 'qat_planner'"):
        load_config(None, ["qat_planner=os:system"])
    assert load_planner() is grid_planner
