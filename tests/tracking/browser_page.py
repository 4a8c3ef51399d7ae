"""A page in a headless Chromium (Qt WebEngine, from the PyQt6-WebEngine wheel; no display).

    python browser_page.py URL PNG WANT TIMEOUT_S

loads URL, waits until the page's text holds WANT (a single-page app renders after the load)
or TIMEOUT_S pass, saves a screenshot to PNG and prints one JSON line:
``{"href": location after the app's redirects, "text": the page's visible text}``.
Run as its own process (tests/tracking/test_ui_browser.py): Qt's event loop stays out of pytest.
"""

import json
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox")  # Chromium's sandbox refuses root

from PyQt6.QtCore import QSize, QTimer, QUrl  # noqa: E402
from PyQt6.QtWebEngineWidgets import QWebEngineView  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

STATE = "({href: location.href, text: document.body ? document.body.innerText : ''})"


def main() -> int:
    url, png, want, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    app = QApplication(sys.argv[:1])
    view = QWebEngineView()
    view.resize(QSize(1400, 900))
    started, polling = time.monotonic(), []

    def finish() -> None:
        def got(state) -> None:
            view.grab().save(png)
            print(json.dumps(state or {}), flush=True)
            app.quit()
        view.page().runJavaScript(STATE, got)

    def poll() -> None:
        def got(state) -> None:
            if want in ((state or {}).get("text") or ""):
                QTimer.singleShot(1000, finish)  # let the rest of the page settle for the picture
            elif time.monotonic() - started > timeout:
                finish()
            else:
                QTimer.singleShot(500, poll)
        view.page().runJavaScript(STATE, got)

    def loaded(ok: bool) -> None:
        if not polling:  # the app's own hash redirects fire loadFinished again
            polling.append(True)
            poll()

    view.loadFinished.connect(loaded)
    view.load(QUrl(url))
    view.show()
    QTimer.singleShot(int((timeout + 30) * 1000), app.quit)  # a page that never loads
    app.exec()
    return 0


if __name__ == "__main__":
    sys.exit(main())
