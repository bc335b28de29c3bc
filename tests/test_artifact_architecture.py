"""A declared `architecture:` is checked against the trained weights at plan time, reading the pickle's opcodes
without unpickling it (reconciler/catalog/pickled.py, reconciler/plan/architecture.py)."""

from __future__ import annotations

import os
import pickle
import pickletools
import warnings

import git
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipelines.neuron import architecture_of
from reconciler.catalog.pickled import NotAPickle, architecture, structure
from reconciler.plan.revisions import plan_revisions
from tests.conftest import commit_all


def _fitted():
    x, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [m.fit(x, y) for m in (make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0)),
                                      make_pipeline(StandardScaler(), LogisticRegression(max_iter=20)),
                                      LogisticRegression(max_iter=20), GradientBoostingClassifier(n_estimators=2))]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_pickle_names_the_architecture_the_export_step_would(protocol):
    for model in _fitted():
        assert architecture(pickle.dumps(model, protocol=protocol)) == architecture_of(model)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/w19a-pickled-was-run",))


def test_a_hostile_pickle_is_read_not_run(tmp_path):
    marker = "/tmp/w19a-pickled-was-run"
    if os.path.exists(marker):
        os.unlink(marker)
    data = pickle.dumps({"model": _Boom()})
    found = structure(data)
    assert not os.path.exists(marker)
    assert found["model"].cls.dotted in ("posix.system", "os.system")
    assert architecture(data) is None  # not a scikit-learn model: nothing to compare


@pytest.mark.parametrize("data", [b"", b"not a pickle", pickle.dumps([1, 2, 3])[:-3], b"\x80\x05(" * 1000])
def test_bytes_that_are_no_pickle_are_refused(data):
    with pytest.raises(NotAPickle):
        architecture(data)


def test_every_opcode_of_a_model_pickle_is_walked():
    data = pickle.dumps(_fitted()[0], protocol=5)
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert {"STACK_GLOBAL", "NEWOBJ", "BUILD", "SETITEMS", "MEMOIZE"} <= ops  # what a Pipeline is made of
    assert structure(data).cls.name == "Pipeline"


def test_plan_reports_a_declared_architecture_the_weights_are_not(template_repo):
    """The template's iris weights are a StandardScaler -> LogisticRegression pipeline (in its local DVC remote)."""
    spec = template_repo / "models/iris-classifier/model.yaml"
    spec.write_text(spec.read_text().replace("architecture: sklearn-scaler-logistic-regression",
                                             "architecture: sklearn-scaler-mlp"))
    service = template_repo / "models/iris-classifier/service.py"
    service.write_text(service.read_text() + "# changed: the model's content hash changes, so the plan checks it\n")
    plan = plan_revisions(template_repo, "HEAD", None, ["dev"])
    error = plan.environments["dev"].models["iris-classifier"].error
    assert error is not None and not plan.ok
    assert ("architecture 'sklearn-scaler-mlp' does not match the trained weights models/iris-classifier/model.pkl, "
            "which are a sklearn-scaler-logistic-regression") in error
    assert "fix: set `architecture: sklearn-scaler-logistic-regression` in models/iris-classifier/model.yaml" in error

    spec.write_text(spec.read_text().replace("architecture: sklearn-scaler-mlp",
                                             "architecture: sklearn-scaler-logistic-regression"))
    assert plan_revisions(template_repo, "HEAD", None, ["dev"]).ok
    commit_all(git.Repo(template_repo), "iris: a comment")
