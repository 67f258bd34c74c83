"""Every type the transformers sweep does not build (`tests.hf_sweep.NOT_SWEPT`) is refused by the loader with
its reason: a folder of the type (its config.json; the tiny model's weights and the type's own image processor
where they can be built offline) given to `load_model` raises a `CheckpointError` whose message names the
reason the sweep gives (the words before the reason's first colon: "a video model", "a vision-language model",
"multi-scale deformable attention", "needs the natten package").

The refusal is read from config.json before any weights, so where the tiny model cannot be built (a language
model of billions of parameters, a class that needs a missing package) the folder holds the type's config only,
as ``save_pretrained`` writes it; the message must be the same.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from tests.hf_sweep import (MAX_PARAMS, NOT_SWEPT, TOWER_MAPPINGS, input_size, model_class,  # noqa: E402
                            processor_for, tiny_config, vision_types)


def reason_words(reason: str) -> str:
    """What a refusal must name: the sweep's reason up to its first colon."""
    return reason.split(":")[0].strip()


def write_folder(model_type: str, folder: str) -> str:
    """A save_pretrained folder of `model_type`; returns what it holds (config / weights / processor)."""
    import transformers
    from transformers import CONFIG_MAPPING
    class_name, mapping = vision_types()[model_type]
    held = []
    model = None
    try:
        if mapping in TOWER_MAPPINGS:   # the type's own folder (a tracker, a two-tower video model), not its tower's
            raise LookupError(model_type)
        cls, config_cls = model_class(model_type, class_name, mapping)
        cfg = tiny_config(model_type, config_cls)
        with torch.device("meta"):
            n = sum(p.numel() for p in cls(cfg).parameters())
        if n <= MAX_PARAMS:
            torch.manual_seed(0)
            model = cls(cfg).eval()
    except Exception:  # noqa: BLE001 - not buildable here (too big, a missing package): its config only
        cfg = CONFIG_MAPPING[model_type]()
        cfg.architectures = [class_name]
    if model is not None:
        model.save_pretrained(folder)
        held.append("weights")
    else:
        if not getattr(cfg, "architectures", None):
            cfg.architectures = [class_name if hasattr(transformers, class_name) else type(cfg).__name__]
        cfg.save_pretrained(folder)
        held.append("config")
    try:
        proc = processor_for(model_type, input_size(cfg), cfg)
        if proc is not None:
            proc.save_pretrained(folder)
            held.append("processor")
    except Exception:  # noqa: BLE001 - a video / multimodal processor that needs more than an image size
        pass
    return ", ".join(held)


def test_every_not_swept_type_is_an_installed_vision_type_with_a_reason():
    types = vision_types()
    for t, reason in NOT_SWEPT.items():
        assert t in types, f"{t} is no vision type of the installed transformers: drop it from NOT_SWEPT"
        assert ":" in reason and len(reason_words(reason)) > 8, f"{t}: the reason must name why ({reason!r})"


@pytest.mark.parametrize("model_type", sorted(NOT_SWEPT))
def test_the_loader_refuses_a_not_swept_type_naming_its_reason(model_type, tmp_path):
    import transformers
    from attention.errors import CheckpointError
    from attention.models import load_model
    transformers.logging.set_verbosity_error()
    if model_type not in transformers.CONFIG_MAPPING:
        pytest.skip(f"{model_type} has no config class in transformers {transformers.__version__}")
    held = write_folder(model_type, str(tmp_path))
    with pytest.raises(CheckpointError) as info:
        load_model(str(tmp_path))
    message = str(info.value)
    want = reason_words(NOT_SWEPT[model_type])
    assert want in message, f"{model_type} (folder: {held}): the refusal does not say {want!r}: {message}"
    # the refusal names the folder's model and gives the reason, not a loading failure
    assert "could not be loaded" not in message and "holds no weights" not in message, message
