"""Built-in blocks and the composer that turns ``model.layers`` into an ``nn.Module``."""

from torchport.models.compose import ModelSpec, build_model, check_layers

__all__ = ["ModelSpec", "build_model", "check_layers"]
