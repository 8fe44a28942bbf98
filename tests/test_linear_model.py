"""ICT-FaceKit as a linear face model: both readers agree, sequences ramp, skin-only subset."""

import numpy as np

from conftest import ICT_FOLDER, ICT_NPZ, require
from morphable.data.linear_model import ICT_SKIN_VERTICES, expression_ramp, load_ict, sample_sequences


def test_folder_and_npz_readers_agree():
    npz = load_ict(require(ICT_NPZ))
    folder = load_ict(require(ICT_FOLDER))
    assert len(folder.identity_modes) == 2 and folder.expression_names == ["jawOpen", "mouthSmile_L"]
    np.testing.assert_allclose(folder.neutral, npz.neutral, atol=1e-5)
    np.testing.assert_allclose(folder.identity_modes[1], npz.identity_modes[1], atol=1e-4)
    j = npz.expression_names.index("mouthSmile_L")
    np.testing.assert_allclose(folder.expression_modes[1], npz.expression_modes[j], atol=1e-4)


def test_expression_ramp_goes_in_and_out():
    r = expression_ramp(9)
    assert r[0] == 0 and np.isclose(r[4], 1) and np.isclose(r[-1], 0)
    assert np.all(np.diff(r[:5]) > 0) and np.all(np.diff(r[4:]) < 0)


def test_sampled_sequences_are_the_linear_model():
    model = load_ict(require(ICT_NPZ)).skin_only()
    assert model.neutral.shape == (ICT_SKIN_VERTICES, 3) and model.faces.max() < ICT_SKIN_VERTICES
    seq = sample_sequences(model, subjects=2, expressions=3, frames=5, seed=7)
    assert seq.vertices.shape == (30, ICT_SKIN_VERTICES, 3)
    assert seq.subjects[0] == "subject_00" and seq.expressions[5] == "cheeks_in" and seq.frames[:5] == [0, 1, 2, 3, 4]
    identity_shape = model.shape(seq.identity_weights[0])
    np.testing.assert_allclose(seq.vertices[0], identity_shape, atol=1e-4)  # frame 0: neutral expression
    assert np.abs(seq.vertices[2] - identity_shape).max() > 0.1  # peak frame moves by more than 1 mm (cm units)
    again = sample_sequences(model, subjects=2, expressions=3, frames=5, seed=7)
    np.testing.assert_array_equal(again.vertices, seq.vertices)
