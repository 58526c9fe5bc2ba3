"""The shapes /v1 answers and accepts, as pydantic models: they make the OpenAPI document
(/v1/openapi.json) and check the JSON bodies of the maintainer routes. Records that already have
a dataclass (AddResult, VersionInfo, JobState) are answered as that dataclass, not copied here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from classifr.versions.registry import VersionInfo


class LabelScore(BaseModel):
    """One label and its probability: the Hugging Face image-classification output element."""

    label: str
    score: float


class ImagePrediction(BaseModel):
    """One image's outcome in /v1/predictions: labels, or the reason it could not be classified."""

    image: str
    id: str | None = Field(None, description="the prediction log's id; feedback names it")
    version: str | None = None
    variant: str | None = Field(None, description="production, candidate (the canary), or pinned")
    labels: list[LabelScore] = []
    latency_ms: float | None = None
    error: str | None = None


class Predictions(BaseModel):
    predictions: list[ImagePrediction]


class FaithfulnessDetails(BaseModel):
    target: str
    score: float = Field(description="the target's probability on the intact image")
    after_removal: float = Field(description="its probability once the top 10% of the map is blurred away")
    fractions: list[float] = Field(description="the shares of pixels removed or revealed, 0.0 to 1.0")
    deletion: list[float] = Field(description="the target's probability with the top pixels removed, per fraction")
    insertion: list[float] = Field(description="the target's probability with the top pixels revealed, per fraction")
    deletion_auc: float = Field(description="area under the deletion curve: lower is more faithful")
    insertion_auc: float = Field(description="area under the insertion curve: higher is more faithful")
    seconds: float
    sentence: str = Field(description="the numbers in plain words")


class ExplanationDetails(BaseModel):
    image: str
    version: str
    method: str
    target: str
    score: float
    seconds: float
    convergence_delta: float | None = None
    settings: str = ""
    heatmap: list[list[float]] = Field(description="attribution in [0, 1] over the model's input, rows first")
    faithfulness: FaithfulnessDetails | None = Field(
        None, description="how far the heatmap shows what the model used (docs/features.md, Faithfulness)"
    )


class Models(BaseModel):
    production: str
    candidate: str | None = Field(None, description="the version the canary serves, while it serves one")
    canary_share: float
    versions: list[VersionInfo]
    pinned_loaded: list[str] = Field(description="versions kept loaded for pinned calls, least recently used first")


class CanaryChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    share: float = Field(ge=0.0, le=1.0, description="share of unpinned production calls the candidate serves")


class CanaryState(BaseModel):
    share: float
    candidate: str | None


class TrainingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: list[str] = Field(
        default_factory=list, max_length=64, description="what `classifr train` takes, e.g. ['--strategy', 'head']"
    )


class ErrorMessage(BaseModel):
    error: str = Field(description="one line, the same words the app shows")
