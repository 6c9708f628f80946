"""Tables and pictures: a run's pictures (plots.py), what the report collects from each run
(collect.py), tables and plots across runs and revisions (compare.py, compare_plots.py), the
README's table of figures (readme.py) and the papers' own figures beside ours (paper.py).
"""
