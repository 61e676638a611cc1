"""The README's Python examples run, as written, against the shipped models."""
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_block_runs(index, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path))
    exec(compile(_python_blocks()[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})


def test_readme_first_face_is_the_astronauts():
    """The README's `faces[0]` of examples/astronaut.jpg is her face, not the mission patch on her suit
    (dlib HOG scores it 0.16, her face 1.21): what the example inverts is what it says."""
    import numpy as np

    import faceedit

    model = faceedit.load_model("faces64")
    photo = faceedit.load_image(os.path.join(REPO, "examples", "astronaut.jpg"))
    faces = faceedit.align(photo, recipe=faceedit.AlignmentRecipe.from_dict(model.recipe))
    assert len(faces) == 1 and faces[0].score > 1.0
    eyes_y = np.asarray(faces[0].landmarks)[36:48, 1].mean()
    assert 76 < eyes_y < 167  # inside her face's box (the patch lies at y 335-426)
    patch = faceedit.align(photo, min_score=0)
    assert [round(f.score, 2) for f in patch] == [0.16, 1.21]
