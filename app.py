"""Classifr's web app: `python app.py` (also the Hugging Face Space entry point).

Settings come from the environment (CLASSIFR_HOME, CLASSIFR_MODEL, GRADIO_SERVER_PORT, ...; see
README). Nothing is built at import: the services and the UI are created in main().
"""

import logging

from classifr.config import Settings
from classifr.ui.app import serve


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(Settings.from_env())


if __name__ == "__main__":
    main()
