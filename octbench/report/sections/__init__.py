"""One module per report section (new sections land here): each renders one section of
``report.md`` as a list of markdown lines, from the tables it is handed.

They use :mod:`octbench.report.markdown`'s helpers; :func:`octbench.report.render.render_markdown`
puts them in the report's order, and :mod:`octbench.report.build` hands it the sections that need
more than the main tables (ranking, calibration, recipe, robustness).
"""
