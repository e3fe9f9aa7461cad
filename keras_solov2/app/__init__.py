"""The application on top of the library: the `keras-solov2` command line
(`cli`), its web server (`web`, with the built page as package data in
`web_page/`) and the files that `predict` and `evaluate` write (`outputs`).

The library never imports this package. `import keras_solov2` does not
either: `keras_solov2.app` is imported on first access.
"""

from keras_solov2.app import cli, outputs, web

__all__ = ["cli", "outputs", "web"]
