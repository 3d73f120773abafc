"""The one error type of the deployment tools."""

from __future__ import annotations

from backbones.errors import UserError


class DeployError(UserError):
    """Bad input to export/quantize/prune/analyze: the message names the file, key or value at fault."""
