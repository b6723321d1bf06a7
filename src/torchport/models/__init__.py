"""Built-in blocks, the composer that turns ``model.layers`` into an ``nn.Module``, and the model contract."""

from torchport.models.compose import build_model, check_layers
from torchport.models.spec import ModelMeta, ModelSpec, model_meta, model_spec

__all__ = ["ModelMeta", "ModelSpec", "build_model", "check_layers", "model_meta", "model_spec"]
