"""The connection form's help link and placeholders (``FLASK_APP_MUTATOR``), and the help page Superset serves."""

from __future__ import annotations

import json

from flask import Flask
from jinja2 import DictLoader

from shillelagh_amplitude.superset.help_link import PLACEHOLDERS, SUPERSET_DOCS_LINK, TEMPLATE, register
from shillelagh_amplitude.superset.help_page import LINK, PATH, readme, section

from ..scripts import REPO


def _app() -> Flask:
    app = Flask("deployment")
    app.jinja_env.loader = DictLoader({
        TEMPLATE: "<!-- the deployment's analytics -->",
        "superset/macros.html": "{% macro get_nonce() %}n0nce{% endmacro %}",
    })
    register(app)
    return app


def test_script_comes_before_the_deployments_own_tail_template() -> None:
    html = _app().jinja_env.get_template(TEMPLATE).render()
    assert html.index('<script nonce="n0nce">') < html.index("<!-- the deployment's analytics -->")
    assert f'JSON.stringify("{SUPERSET_DOCS_LINK}")' in html
    assert f'link.href = "{LINK}";' in html
    assert f"var placeholders = {json.dumps(PLACEHOLDERS)};" in html
    assert PLACEHOLDERS["sqlalchemy_uri"] == "amplitude://<API key>:<secret key>@?region=eu"
    assert set(PLACEHOLDERS) == {"username", "password", "query_input", "database_name", "sqlalchemy_uri"}
    # a footer button keeps the focus where it is (the browser test clicks "Connect" once, from a field)
    assert "document.addEventListener('mousedown'" in html and "event.preventDefault();" in html


def test_the_help_page_is_the_readmes_connection_section_served_locally() -> None:
    response = _app().test_client().get(PATH)
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert '<h2 id="connecting">Connecting</h2>' in html
    assert '<h3 id="in-superset">In Superset</h3>' in html and LINK.endswith("#in-superset")
    assert "<strong>Username</strong> = the project&rsquo;s API key" in html or \
        "<strong>Username</strong> = the project's API key" in html
    assert "<script" not in html and "http" not in html.split("<body>")[0]  # nothing fetched from elsewhere


def test_the_page_renders_the_installed_readme_section() -> None:
    """The installed package's description is this README (re-installed by `make test` when pyproject changes);
    the section's first heading and paragraph are the same."""
    installed, current = section(readme()), section("\n" + (REPO / "README.md").read_text())
    assert installed.split("\n\n")[:2] == current.split("\n\n")[:2]


def test_superset_config_installs_it(superset_app) -> None:
    """The browser test sees the link retargeted; this names the wiring (``FLASK_APP_MUTATOR``) if it breaks."""
    env = superset_app.jinja_env
    source = env.loader.get_source(env, TEMPLATE)[0]
    assert f'link.href = "{LINK}";' in source
    assert "may be overridden in your custom deployment" in source  # Superset's own template is kept after it
    assert any(rule.rule == PATH for rule in superset_app.url_map.iter_rules())
