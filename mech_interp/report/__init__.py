"""``mech-interp report RESULTS_DIR``: a static HTML site of a results tree, read by its manifests.

Every directory holding a ``manifest.json`` is a run (``mech-interp``, ``vit-hooks`` and
``train-gpt2-bias`` runs alike); ``.partial`` directories are never read. The site is
self-contained and works from ``file://`` with no network:

    index.html            the models with their headline findings, and every run: experiment,
                          configuration, versions, commit, when
    compare.html          where massive activations appear, model by model (each metric defined there)
    models/<model>.html   one page per model: the findings of its runs (``findings``), then every table
                          (sortable) and figure of its runs, in the paper's order (``page_order``)
    runs/<model>/<run>/   copies of each run's manifest, summary, CSV tables and figure HTML (the
                          figures' plotly.js reference rewritten to the site's own copy)
    plotly.min.js         the one plotly.js every figure loads
    report.css, sort.js,  the pages' style, the table sorting and the loading of each figure as it comes
    figures.js            into view (vanilla JS)

Numbers are shown rounded (``rounding``); the copied tables keep every digit.

A results tree may be someone else's: nothing outside it is read (``tree``: a link leaving it is
skipped and named in a warning), every string of it is escaped on the pages, and its manifests and
tables may hold anything (``manifest_fields``; the comparison reads only tables of numbers). The
report replaces or deletes only directories it made (``ownership``).
"""
