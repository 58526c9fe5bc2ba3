"""What the app tells people about their photos: what is kept, for how long and who sees it.

The one place for that wording (docs/privacy.md), built from the settings, so the Classify, Teach
and Monitor tabs and the feedback panel say the same thing and say what the app really does.
"""

from __future__ import annotations

import logging

from classifr.core.config import Settings
from classifr.core.images import THUMBNAIL_SIDE

logger = logging.getLogger(__name__)

METADATA = "metadata such as the camera and the location removed"  # what stored copies lack
PHOTOS_FOR_MAINTAINERS = "Photos are shown to maintainers only."


def classify_note(settings: Settings) -> str:
    """Under the Classify tab's image: what happens to a photo that is only classified."""
    if not settings.prediction_log:
        return "**Privacy:** photos you classify are not kept."
    if not settings.store_images:
        return ("**Privacy:** photos you classify are not kept; the app logs only the prediction "
                "(labels, scores, time) and a fingerprint (hash) of the photo.")
    return (
        f"**Privacy:** of a photo you classify, the app keeps a small copy (at most {THUMBNAIL_SIDE} px, "
        f"{METADATA}) for up to {_days(settings.thumbnail_retention_days)}, for maintainers to review "
        "the model; it is never shown to other visitors. It joins the project dataset only if you "
        "confirm or correct the prediction."
    )


def contribution_note(settings: Settings, action: str = "Confirming or correcting stores this image") -> str:
    """Beside every button that stores photos in the project dataset: where they go, who sees them."""
    where = f", published on the Hub as `{settings.dataset_repo}`," if settings.dataset_repo else ""
    return (
        f"{action} and your label in the project dataset{where} under the {settings.dataset_license} "
        "licence; metadata such as the camera and the location is removed first."
    )


def monitor_note(settings: Settings) -> str:
    """Above the Monitor tab's photos, for everyone: why they may not see them."""
    if not settings.store_images:
        return "No photos are kept (`CLASSIFR_STORE_IMAGES=0`): there are no galleries or review queue."
    return (
        f"{PHOTOS_FOR_MAINTAINERS} Enter the maintainer password (in the canary row below) and refresh. "
        f"Copies of photos nobody confirmed or corrected are deleted after {_days(settings.thumbnail_retention_days)}."
    )


def _days(days: int) -> str:
    return "1 day" if days == 1 else f"{days} days"
