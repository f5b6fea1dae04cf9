"""mcutils: the shared code of the executable book on model collapse.

One module a concept:

- :mod:`mcutils.generational`: data-mixing policies and the fit → sample → mix loop
- :mod:`mcutils.simulate`: vectorised discrete, Gaussian and linear-regression chains
- :mod:`mcutils.theory`: the closed forms drawn over the simulations
- :mod:`mcutils.gmm`, :mod:`mcutils.vae`: the supplementary material's model families
- :mod:`mcutils.lm`: the language-model engine (fine-tune, beam-search regenerate, score)
- :mod:`mcutils.runs`: the runs folder, atomic writes, resume
- :mod:`mcutils.results`: claims recorded for the scorecard
- :mod:`mcutils.plotting`: the house style
- :mod:`mcutils.validate`: parameter checks with clear errors
- :mod:`mcutils.book`: a chapter's setup in one call (``start_chapter``)
- :mod:`mcutils.reproduce`: the batch runner (needs a checkout of the book: ``_toc.yml``, ``book/``, ``profiles/``)
"""
__version__ = "0.1.0"
