"""Caption writers of the synthetic scenes, by `SceneConfig.caption_style`: truth record -> the
caption fields of its scene record (`caption`, `short_caption`, `original_caption`)."""

from __future__ import annotations

from collections.abc import Callable

from mllm.bench import rich_captions, scene_captions

CAPTION_WRITERS: dict[str, Callable] = {
    "basic": scene_captions.write_captions,  # the quickstart: 1-2 objects, 18 words
    "rich": rich_captions.write_captions,  # everything the rich preset draws, 40+ words
}
