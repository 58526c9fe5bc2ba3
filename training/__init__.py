"""Training, evaluation and publishing of new model versions (an accelerate script and helpers).

May import classifr; classifr never imports training.
"""
