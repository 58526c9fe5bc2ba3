"""Classifr's web app: `python app.py` (also the Hugging Face Space entry point).

Settings come from the environment (CLASSIFR_HOME, CLASSIFR_MODEL, GRADIO_SERVER_PORT, ...; see
docs/settings.md). Nothing is built at import: the services and the UI are created in main().
"""

import logging
import signal

from classifr.core.config import Settings
from classifr.core.memory import return_large_buffers_to_the_system
from classifr.ui.app import serve


def _stop_on_sigterm(_signum, _frame) -> None:
    # A Space (or systemd, or docker stop) ends the app with SIGTERM: leave through the same path as
    # Ctrl+C, so the prediction log and the dataset sync write what they still hold.
    raise KeyboardInterrupt


def main() -> None:
    # Before the first request thread: glibc fixes its number of arenas when a second thread first
    # allocates (classifr.core.memory).
    return_large_buffers_to_the_system()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    serve(Settings.from_env())


if __name__ == "__main__":
    main()
