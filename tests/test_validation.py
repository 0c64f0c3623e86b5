"""Bad configurations and data raise a ValueError that names the field, the value and what
is allowed, before anything is traced or compiled."""

from __future__ import annotations

import numpy as np
import optax
import pytest

import dynamics as td
from dynamics import programs


@pytest.fixture(scope="module")
def task():
    return td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8, seed=0)


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if a program is built: errors must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a program was compiled before the error")

    monkeypatch.setattr(programs, "_functions", refuse)
    monkeypatch.setattr(programs, "_compiled", refuse)


def spec_for(task, **kw):
    model = kw.pop("model", td.MLP(width=8, out_dim=1))
    return td.Spec(model, task, kw.pop("optimizer", td.optimizers.sgd(0.1)),
                   steps=kw.pop("steps", 10), log_every=kw.pop("log_every", 5), **kw)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: td.MLP(width=0), r"width must be a positive int, got 0"),
        (lambda: td.MLP(width=2.5), r"width must be a positive int, got 2.5"),
        (lambda: td.MLP(depth=-1), r"depth must be an int >= 0, got -1"),
        (lambda: td.MLP(activation="swish"), r"activation must be one of .*'relu'.*got 'swish'"),
        (lambda: td.MLP(parametrization="xavier"), r"parametrization must be one of .*'ntk'"),
        (lambda: td.MLP(output_scale=0.0), r"output_scale must be > 0, got 0.0"),
        (lambda: td.MLP(sigma_b=-1.0), r"sigma_b must be >= 0, got -1.0"),
        (lambda: td.MLP(gamma0=-1.0), r"gamma0 must be > 0"),
        (lambda: td.Optimizer("rmsprop"), r"optimizer must be one of .*'adamw'.*got 'rmsprop'"),
        (lambda: td.optimizers.sgd(-0.1), r"lr must be > 0, got -0.1"),
        (lambda: td.optimizers.sgd(0.0), r"lr must be > 0, got 0.0"),
        (lambda: td.optimizers.momentum(0.1, momentum=1.0), r"momentum must be in \[0, 1\)"),
        (lambda: td.Optimizer(schedule="step"), r"schedule must be one of .*'cosine'"),
        (lambda: td.optimizers.adamw(weight_decay=-1.0), r"weight_decay must be >= 0"),
    ],
)
def test_bad_component_fields(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_spec_fields(task, no_compile):
    with pytest.raises(ValueError, match=r"steps must be a positive int, got 0"):
        spec_for(task, steps=0)
    with pytest.raises(ValueError, match=r"log_every must divide steps=10, got log_every=3"):
        spec_for(task, log_every=3)
    with pytest.raises(ValueError, match=r"batch_size must be <= the number of training "
                                         r"examples \(16\), got 32"):
        spec_for(task, batch_size=32)
    with pytest.raises(ValueError, match=r"strategy must be one of"):
        spec_for(task, strategy="pmap")
    with pytest.raises(ValueError, match=r"warmup_steps must be <= steps=10"):
        spec_for(task, optimizer=td.Optimizer(schedule="warmup", warmup_steps=20))


def test_model_task_shape_mismatch(task, no_compile):
    with pytest.raises(ValueError, match=r"model MLP gives outputs of shape \(3,\) per example "
                                         r"but the task needs \(1,\)"):
        spec_for(task, model=td.MLP(width=8, out_dim=3))


def test_flax_model_input_mismatch(task, no_compile):
    import flax.linen as nn

    class Needs7(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(x.reshape(x.shape[0], 7, -1).sum(-1))

    with pytest.raises(ValueError, match=r"cannot take the task's inputs of shape \(4,\)"):
        spec_for(task, model=td.from_linen(Needs7()))


def test_nan_in_data_is_refused():
    x = np.ones((4, 2))
    x[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"x_train contains NaN or inf"):
        td.tasks.from_arrays(x, np.ones(4))
    with pytest.raises(ValueError, match=r"y_test contains NaN or inf"):
        td.tasks.from_arrays(np.ones((4, 2)), np.ones(4), np.ones((2, 2)), [1.0, np.inf])


def test_width_parametrization_needs_the_optimizer_family(task, no_compile):
    # the learning-rate multipliers of ntk and mup depend on SGD vs Adam
    def custom(learning_rate):
        return optax.sgd(learning_rate)

    for p in ("ntk", "mup"):
        with pytest.raises(ValueError, match=rf"parametrization='{p}': its family is unknown"):
            spec_for(task, model=td.MLP(width=8, parametrization=p),
                     optimizer=td.optimizers.from_optax(custom, lr=0.1))


@pytest.mark.parametrize(
    "axes, match",
    [
        (dict(lrr=[0.1]), r"'lrr' is not a hyperparameter of this spec: swept values are "
                          r"\[.*'lr'.*\] and 'seed', static axes are \[.*'width'.*\]"),
        (dict(lr=[0.1, -0.1]), r"lr must be > 0, got -0.1"),
        (dict(lr=[0.1, 0.1]), r"lr has repeated values"),
        (dict(width=[8, 0]), r"width must be a positive int, got 0"),
        (dict(activation=["tanh", "swish"]), r"activation must be one of"),
        (dict(seed=[-1]), r"seed must be integers >= 0"),
        (dict(output_scale=[0.0]), r"output_scale must be > 0, got 0.0"),
        (dict(momentum=[0.9]), r"'momentum' is not a hyperparameter"),  # plain sgd
        (dict(gamma0=[1.0]), r"'gamma0' is not a hyperparameter"),  # only under mup
        (dict(label_noise=[0.1]), r"'label_noise' is not a hyperparameter"),  # no noise draws
        (dict(lr=[]), r"lr must be a scalar or a non-empty 1-D sequence"),
        (dict(batch_size=[4, 64]), r"batch_size must be <= the number of training examples"),
    ],
)
def test_bad_sweep_arguments(task, no_compile, axes, match):
    spec = spec_for(task)
    if "label_noise" in axes:
        spec = spec_for(td.tasks.from_arrays(task.x_train, task.y_train))
    with pytest.raises(ValueError, match=match):
        td.sweep(spec, **axes)


def test_run_refuses_sequences(task, no_compile):
    with pytest.raises(ValueError, match=r"run takes one value per hyperparameter"):
        td.run(spec_for(task), lr=[0.1, 0.2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_runs_per_chunk": 0}, r"max_runs_per_chunk must be an int >= 1, got 0"),
        ({"memory_budget": -1.0}, r"memory_budget must be a number of bytes > 0, got -1.0"),
        ({"logs_per_chunk": 3}, r"logs_per_chunk must be an int >= 1 dividing the 2 log points, got 3"),
    ],
)
def test_bad_execution_options_fail_before_compiling(task, no_compile, kwargs, match):
    with pytest.raises(ValueError, match=match):
        td.sweep(spec_for(task), seed=range(2), **kwargs)


def test_load_of_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such results file"):
        td.load(tmp_path / "nothing.nc")


def test_swapped_model_and_task_are_named(task, no_compile):
    model = td.MLP(width=8, out_dim=1)
    with pytest.raises(ValueError, match=r"model must be a model .*got a task: the arguments "
                                         r"are Spec\(model, task, \.\.\.\), model first"):
        td.Spec(task, model)
    with pytest.raises(ValueError, match=r"task must be a dynamics task .*got MLP"):
        td.Spec(model, model)
    with pytest.raises(ValueError, match=r"model must be a model with init and apply .*got str"):
        td.Spec("mlp", task)


@pytest.mark.parametrize("observables", ["loss", td.observables.Loss(), None])
def test_observables_must_be_a_tuple(task, no_compile, observables):
    hint = r"; write observables=\(" if observables is not None else ""
    with pytest.raises(ValueError, match=r"observables must be a tuple of observables and "
                                         rf"names, got .*{hint}"):
        spec_for(task, observables=observables)


def test_integer_class_labels_with_mse_are_refused():
    x = np.random.default_rng(0).normal(size=(6, 3))
    labels = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"y_train holds integer class labels .*loss='mse'.*"
                                         r"cross_entropy.*one-hot"):
        td.tasks.from_arrays(x, labels, loss="mse")
    td.tasks.from_arrays(x, labels.astype(float), loss="mse")  # real targets: regression
    td.tasks.from_arrays(x, np.eye(3)[labels].astype(int), loss="mse")  # one-hot: accepted
