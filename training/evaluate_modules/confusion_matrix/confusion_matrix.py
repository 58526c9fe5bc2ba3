"""Confusion matrix: counts of (true class, predicted class) pairs (scikit-learn's `confusion_matrix`).

Same interface as the Hub's `evaluate-metric/confusion_matrix`, kept local so it loads offline.
"""

import datasets
import evaluate
from sklearn.metrics import confusion_matrix

_DESCRIPTION = """
The confusion matrix counts how the examples of each true class (rows) were predicted (columns).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class ids.
    references (`list` of `int`): True class ids.
    labels (`list` of `int`): The classes that index the rows and columns, in this order; use it to
        select or reorder classes. Defaults to every class in `predictions` and `references`, sorted.
    sample_weight (`list` of `float`): Sample weights. Defaults to None.
    normalize (`str`): 'true' (rows), 'pred' (columns) or 'all' to normalise; None (default) for counts.

Returns:
    confusion_matrix (`numpy.ndarray`): Entry [i, j] is the number of examples of true class
        `labels[i]` predicted as class `labels[j]`.

Examples:
    >>> confusion_matrix_metric = evaluate.load("training/evaluate_modules/confusion_matrix")
    >>> confusion_matrix_metric.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 1, 1, 2, 1, 0])
    {'confusion_matrix': array([[1, 0, 1],
           [0, 2, 0],
           [1, 1, 0]])}
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
class ConfusionMatrix(evaluate.Metric):
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
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.confusion_matrix.html"],
        )

    def _compute(self, predictions, references, labels=None, sample_weight=None, normalize=None):
        return {
            "confusion_matrix": confusion_matrix(
                references, predictions, labels=labels, sample_weight=sample_weight, normalize=normalize
            )
        }
