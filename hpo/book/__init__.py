"""The book's chapter 6 reproduced: "Deep Learning from Scratch", sections 6.1 to 6.5.

Each experiment of the chapter that trains a network is a study under
``studies/book/`` (a grid over the compared setting, the others fixed, no
pruning) run by the service like any other, so its trials land in the study
database and can be opened in optuna-dashboard; the figures are drawn from the
stored learning curves.  What is not a training run is a pure function:

- :mod:`hpo.book.paths`: optimizer paths on f(x, y) = x^2/20 + y^2 (6.1.7);
- :mod:`hpo.book.activations`: hidden-layer activations per weight init (6.2.2-6.2.3);
- :mod:`hpo.book.experiments`: the studies (6.1.8, 6.2.4, 6.3.2, 6.4.2, 6.4.3, 6.5.3),
  run with quick or the book's sizes, and the numbers read back from them;
- :mod:`hpo.book.findings`: the numbers behind each finding (asserted by the tests);
- :mod:`hpo.book.figures`: the figures (matplotlib);
- :mod:`hpo.book.reproduce`: everything at once, for ``hpo book``.

The book uses MNIST; Fashion-MNIST (same format and size) stands in for it.
"""

SECTIONS = ("6.1.7", "6.1.8", "6.2.2-6.2.3", "6.2.4", "6.3.2", "6.4", "6.5.3")
"""The items of ``hpo book``, by the book's section, in the chapter's order (see :mod:`hpo.book.reproduce`).

Here rather than in :mod:`hpo.book.reproduce` so that the command line can list them
without importing matplotlib."""
