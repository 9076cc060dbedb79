"""Text encoding: any transformers encoder + tokenizer (mT5/T5 at real size, tiny ones in tests)."""

from __future__ import annotations

import torch

# The release tokenises with truncation at 200 tokens (model.md §1.5).
MAX_TEXT_TOKENS = 200


@torch.no_grad()
def encode_text(
    tokenizer, text_encoder, prompts: list[str], max_length: int = MAX_TEXT_TOKENS, pad_to: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts with the encoder's last hidden state.

    Args:
        prompts: B strings.
        pad_to: pad to this many tokens (the release pads the unconditional "" prompt to the
            conditional prompt's length); default pads to the longest prompt.
    Returns:
        hidden states [B, L, text_dim] and a bool mask [B, L] (True = real token).
    """
    padding = "max_length" if pad_to is not None else "longest"
    batch = tokenizer(
        prompts,
        max_length=pad_to or max_length,
        padding=padding,
        truncation=True,
        return_tensors="pt",
    )
    device = text_encoder.device
    ids = batch["input_ids"].to(device)
    mask = batch["attention_mask"].to(device)
    hidden = text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return hidden, mask.bool()


def build_word_tokenizer(words: list[str], model_max_length: int = MAX_TEXT_TOKENS):
    """A small word-level fast tokenizer built in-process (tests and from-scratch models have
    no downloaded vocabulary). Lower-cases, splits on whitespace and punctuation; unknown
    words map to [UNK]; ends every text with [EOS] like T5 does."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[EOS]"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for word in sorted({w.lower() for w in words}):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A [EOS]", special_tokens=[("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        eos_token="[EOS]",
        model_max_length=model_max_length,
    )
