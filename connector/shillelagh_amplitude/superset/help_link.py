"""The "Connect a database" form, in Amplitude's terms: its help link leads to the connection help that Superset
itself serves (:mod:`.help_page`), its fields show what goes in them, and one "Connect" click connects.

Superset 6.1 builds the link under "Enter the required … credentials" into its frontend as
``https://superset.apache.org/docs/databases/<engine>`` (its per-engine overrides come from
``superset_text.yml`` at build time only), its fields' placeholders are fixed ("e.g. Analytics"), and a first
"Connect" click made with the cursor in a field is lost (leaving the field starts validation, which disables the
button between mousedown and mouseup). Its runtime extension point is the template
``tail_js_custom_extra.html``, included at the end of every page. :func:`register` prepends to that template a
script (carrying Talisman's CSP nonce) that retargets links to Amplitude's missing page at
:data:`.help_page.LINK` and, in a form for Amplitude Export API, sets our placeholders (and the URI form's) and
keeps the focus where it is when a footer button is pressed; whatever the deployment's own template holds is
kept after it.
"""

from __future__ import annotations

import json
from string import Template
from typing import Any

from jinja2 import ChoiceLoader, DictLoader, Environment, TemplateNotFound

from . import help_page
from .engine_spec import AmplitudeEngineSpec

TEMPLATE = "tail_js_custom_extra.html"
#: Where Superset's frontend sends "Need help? Learn more about connecting to …" for this engine.
SUPERSET_DOCS_LINK = f"https://superset.apache.org/docs/databases/{AmplitudeEngineSpec.engine}"

#: The form's inputs (by name) and what they hold, for a connection to Amplitude.
PLACEHOLDERS = {
    "username": "the Amplitude project's API key",
    "password": "the Amplitude project's secret key",
    "query_input": "region=eu for an EU project (empty for US)",
    "database_name": "e.g. Amplitude (production)",
    "sqlalchemy_uri": AmplitudeEngineSpec.sqlalchemy_uri_placeholder,
}

SCRIPT = Template("""{% import 'superset/macros.html' as amplitude_macros %}
<script nonce="{{ amplitude_macros.get_nonce() }}">
  (function () {
    var selector = 'a[href=' + JSON.stringify($docs_link) + ']';
    var placeholders = $placeholders;
    function amplitudeModal(node) {
      var modal = node && node.closest ? node.closest('.ant-modal') : null;
      return modal && modal.textContent.indexOf($engine_name) !== -1 ? modal : null;
    }
    // Pressing a footer button ("Connect") must not take the focus: leaving a field starts the form's validation,
    // which disables "Connect" between mousedown and mouseup, and the click is lost.
    document.addEventListener('mousedown', function (event) {
      var button = event.target.closest && event.target.closest('.ant-modal-footer button');
      if (button && amplitudeModal(button)) { event.preventDefault(); }
    }, true);
    function update() {
      document.querySelectorAll(selector).forEach(function (link) { link.href = $help_url; });
      document.querySelectorAll('.ant-modal').forEach(function (modal) {
        if (!amplitudeModal(modal)) { return; }
        Object.keys(placeholders).forEach(function (name) {
          modal.querySelectorAll('[name="' + name + '"]').forEach(function (input) {
            if (input.placeholder !== placeholders[name]) { input.placeholder = placeholders[name]; }
          });
        });
      });
    }
    new MutationObserver(update).observe(document.documentElement, {
      subtree: true, childList: true, attributes: true, attributeFilter: ['href', 'placeholder'],
    });
    update();
  })();
</script>
""").substitute(docs_link=json.dumps(SUPERSET_DOCS_LINK), help_url=json.dumps(help_page.LINK),
                placeholders=json.dumps(PLACEHOLDERS), engine_name=json.dumps(AmplitudeEngineSpec.engine_name))


def _existing_source(env: Environment) -> str:
    """The deployment's ``tail_js_custom_extra.html`` (Superset ships one with comments only)."""
    try:
        return env.loader.get_source(env, TEMPLATE)[0] if env.loader else ""
    except TemplateNotFound:
        return ""


def register(app: Any) -> None:
    """``FLASK_APP_MUTATOR``: serve the help page, and the script before the deployment's own tail template."""
    help_page.register(app)
    env = app.jinja_env
    source = SCRIPT + _existing_source(env)
    env.loader = ChoiceLoader([DictLoader({TEMPLATE: source}), env.loader])
