"""What a pipeline folder says about its model: ``model_card.json`` beside ``model_index.json``.

The card is small and optional::

    {"scope": "synthetic impacts only",
     "when_silent": "install the full model (`v2a model pull sta-v2a`)"}

``scope``: what the model knows, in a few words; the server names it in ``hello_reply`` and
``status_reply`` (``model_scope``) and the Blender panel shows it next to the model's name.
``when_silent``: advice added to the warning of a near-silent take (a model that knows little
points to one that knows more). A folder without a card states no scope (a random or
unknown model): the server says nil and adds no advice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CARD_FILE = "model_card.json"
MAX_CARD_TEXT = 200  # characters of each entry that reach the wire

# A pipeline converted from the released STA-V2A weights (``v2a convert``).
STA_V2A_SCOPE = "general Foley (VGGSound-trained)"


@dataclass(frozen=True)
class ModelCard:
    scope: str | None = None
    when_silent: str | None = None


def read_model_card(model_dir: str | Path) -> ModelCard:
    """The folder's card; an empty one when it has none or it cannot be read (a card is
    information for the editor, never a reason for a model not to load)."""
    try:
        data = json.loads((Path(model_dir) / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ModelCard()
    if not isinstance(data, dict):
        return ModelCard()

    def text(key: str) -> str | None:
        value = data.get(key)
        return value.strip()[:MAX_CARD_TEXT] or None if isinstance(value, str) else None

    return ModelCard(scope=text("scope"), when_silent=text("when_silent"))


def write_model_card(model_dir: str | Path, card: ModelCard) -> Path:
    """Write ``card`` into a pipeline folder (entries that are None are left out)."""
    path = Path(model_dir) / CARD_FILE
    data = {key: value for key, value in (("scope", card.scope),
                                          ("when_silent", card.when_silent)) if value}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path
