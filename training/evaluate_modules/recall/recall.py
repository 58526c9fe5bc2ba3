"""Recall: the share of a class's examples that are predicted as it (scikit-learn's `recall_score`).

Same interface as the Hub's `evaluate-metric/recall`, kept local so it loads offline, plus
scikit-learn's `zero_division`.
"""

import datasets
import evaluate
from sklearn.metrics import recall_score

_DESCRIPTION = """
Recall is the share of the examples of a class that are predicted as that class:
Recall = TP / (TP + FN).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class ids.
    references (`list` of `int`): True class ids.
    labels (`list` of `int`): The classes to include when `average` is not 'binary', and their order
        when `average` is None. Defaults to every class in `predictions` and `references`, sorted.
    pos_label (`int`): The positive class when `average` is 'binary'. Defaults to 1.
    average (`str` or None): 'binary' (default), 'micro', 'macro', 'weighted', or None for one
        score per class in `labels`.
    sample_weight (`list` of `float`): Sample weights. Defaults to None.
    zero_division (`"warn"`, 0.0, 1.0 or nan): The value where recall is undefined
        (a class with no reference). Defaults to "warn" (0 with a warning).

Returns:
    recall (`float`, or `numpy.ndarray` of `float` when `average` is None): In [0, 1].

Examples:
    >>> recall_metric = evaluate.load("training/evaluate_modules/recall")
    >>> recall_metric.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 2, 1, 0, 0, 1], average=None)
    {'recall': array([1., 0., 0.])}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int32"),
                    "references": datasets.Value("int32"),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.recall_score.html"],
        )

    def _compute(
        self,
        predictions,
        references,
        labels=None,
        pos_label=1,
        average="binary",
        sample_weight=None,
        zero_division="warn",
    ):
        score = recall_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        # One score per class stays an array even for a single class, unlike the Hub script.
        return {"recall": score if average is None else float(score)}
