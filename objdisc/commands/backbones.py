"""``objdisc backbones``: the registered backbones, or every timm ViT ``-b timm:NAME`` takes."""

from __future__ import annotations

from dataclasses import dataclass

from objdisc.models.specs import ALIASES, BACKBONES
from objdisc.utils.text_table import text_table


@dataclass(frozen=True)
class BackbonesConfig:
    """Everything ``objdisc backbones`` takes.

    Attributes:
        all_timm: list every pretrained timm ViT ``timm:NAME`` takes, instead of the table.
        check: with ``all_timm``, build each architecture on the meta device and keep the readable.
    """

    all_timm: bool = False
    check: bool = False


def run(config: BackbonesConfig) -> tuple[str, str | None]:
    """What the command prints: ``(text for stdout, a note for stderr or None)``."""
    if config.all_timm:
        from objdisc.models.specs import timm_models

        names = timm_models(config.check)
        how = (
            "each architecture built and checked"
            if config.check
            else "by module (ViT, DeiT, EVA); each is checked on use"
        )
        note = f"\n{len(names)} pretrained timm models ({how}); any other timm ViT works as timm:NAME too"
        return "\n".join(f"timm:{name}" for name in names), note
    header = ("name", "timm model", "patch", "registers", "CLS", "params (M)", "licence")
    rows = [(*header, "position embedding at other sizes")]
    for spec in BACKBONES.values():
        cls = "yes" if spec.class_token else "no"
        rows.append(
            (
                spec.name,
                spec.timm_name,
                str(spec.patch_size),
                str(spec.num_registers),
                cls,
                f"{spec.params_m:.1f}",
                spec.license,
                spec.pos_embed_note,
            )
        )
    aliases = ", ".join(f"{alias} -> {name}" for alias, name in ALIASES.items())
    return text_table(rows) + f"\n\naliases: {aliases}", None


__all__ = ["BackbonesConfig", "run"]
