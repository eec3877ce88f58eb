"""One module per report section (new sections land here): each renders one section of
``report.md`` as a list of markdown lines, from tables it is handed.

They use :mod:`octbench.report.markdown`'s helpers; :mod:`octbench.report.build` calls them and
hands the lines to :func:`~octbench.report.markdown.render_markdown` (so markdown never imports
them, and there is no cycle).
"""
