"""Browser steps that wait for the state the page shows, never for a fixed time.

Superset's pages load their data after they draw: the "Connect a database" modal fetches its engine list
(``GET /api/v1/database/available/``, which imports every installed dialect, slow on a busy machine) after it
opens, and re-renders its form when an engine is chosen and again when the fields are validated. A step that
acts before that state (typing an engine name into a select that has no options yet, clicking a button that a
re-render replaced) is lost silently; these helpers poll until the page shows the state, then act.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

ENGINE = "Amplitude Export API"
#: What a dashboard page shows of its charts: how many, how many are still loading, the text of those in error, and
#: each big number by its chart's title. A chart not started yet shows no loading indicator either: wait for its
#: content too.
DASHBOARD_STATE = """
    const holders = [...document.querySelectorAll('[data-test="dashboard-component-chart-holder"]')];
    const charts = holders.filter(h => h.querySelector('[data-test="chart-container"]'));
    return {
      charts: charts.length,
      loading: charts.filter(h => h.querySelector('.loading, [data-test="loading-indicator"]')).length,
      errors: charts.filter(h => h.querySelector('[role="alert"], .ant-alert-error, [data-test="error-message"]'))
                    .map(h => h.innerText.slice(0, 300)),
      numbers: Object.fromEntries(charts.filter(h => h.querySelector('.header-line'))
                    .map(h => [h.querySelector('.header-title, [data-test="editable-title"]')?.innerText
                               || h.innerText.split('\\n')[0], h.querySelector('.header-line').innerText])),
    };
"""
OPEN_DROPDOWN = ".ant-select-dropdown:not(.ant-select-dropdown-hidden)"


def polling_wait(browser, timeout_s: float = 60,
                 ignored: tuple[type[Exception], ...] = (StaleElementReferenceException,)) -> WebDriverWait:
    """A wait that polls through re-renders (an element replaced between finding and reading it; ``ignored``:
    also what else a step may meet on its way, e.g. a click intercepted while a modal animates in)."""
    return WebDriverWait(browser, timeout_s, poll_frequency=0.25, ignored_exceptions=list(ignored))


def click(browser, css: str = "", xpath: str = "", text: str | None = None, timeout_s: float = 30) -> None:
    """Click the first element matching (and showing ``text``, if given) once it takes the click: popovers
    and menus open with an animation."""

    def clicked(d) -> bool:
        try:
            found = d.find_elements(By.XPATH, xpath) if xpath else d.find_elements(By.CSS_SELECTOR, css)
            element = next((e for e in found if text is None or e.text.strip() == text), None)
            if element is None:
                return False
            element.click()
            return True
        except WebDriverException:
            return False

    WebDriverWait(browser, timeout_s, poll_frequency=0.3).until(clicked)


def shown_options(browser) -> list[WebElement]:
    """The options of the open select dropdown that are drawn."""
    return [o for o in browser.find_elements(By.CSS_SELECTOR, f"{OPEN_DROPDOWN} .ant-select-item-option")
            if o.is_displayed()]


def choose_engine(browser, engine: str = ENGINE) -> WebElement:
    """In an open "Connect a database" modal, pick ``engine`` from "supported databases" once the engine list
    has loaded (its option is drawn), and return the form's Username field once the form shows it."""
    search = engine.split()[0]

    def picked(d) -> bool:
        try:
            selects = d.find_elements(By.CSS_SELECTOR, ".ant-modal .ant-select")
            if not selects:
                return False
            if not d.find_elements(By.CSS_SELECTOR, OPEN_DROPDOWN):
                selects[-1].click()  # opens the dropdown (refused while the modal still animates in)
                return False
            box = selects[-1].find_element(By.CSS_SELECTOR, "input")  # its search box
            if box.get_attribute("value") != search:
                box.send_keys(Keys.CONTROL, "a")
                box.send_keys(search)
                return False
            option = next((o for o in shown_options(d) if o.text.strip() == engine), None)
            if option is None:  # the engine list has not arrived yet (the dropdown says "No data")
                return False
            option.click()
            return True
        except WebDriverException:  # a click intercepted, an element replaced: look again
            return False

    polling_wait(browser).until(picked)
    return polling_wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".ant-modal input[name=username]"))[0]


def fill_fields(browser, values: dict[str, str]) -> None:
    """Type each ``.ant-modal input[name=…]`` field's value until every field holds its own at once: a re-render
    of the form (the engine's fields arriving, a validation) can replace a field or reset what was typed into
    it. The cursor stays in the last field typed into."""

    def hold(d) -> bool:
        held = True
        for name, value in values.items():
            found = d.find_elements(By.CSS_SELECTOR, f".ant-modal input[name={name}]")
            if found and found[0].get_attribute("value") == value:
                continue
            held = False
            if found:
                found[0].send_keys(Keys.CONTROL, "a")
                found[0].send_keys(value)
        return held

    polling_wait(browser, ignored=(WebDriverException,)).until(hold)


def open_connect_form(browser, base: str, engine: str = ENGINE) -> WebElement:
    """The database list, "+ Database", the engine chosen: the form's Username field."""
    browser.get(f"{base}/databaseview/list/")
    click(browser, '[data-test="btn-create-database"]', timeout_s=60)
    return choose_engine(browser, engine)


#: What a modal shows: its footer's buttons (label, enabled), the fields' values (not the password's) and the
#: messages under them, for a step that waited in vain.
MODAL_STATE = """
    const modal = [...document.querySelectorAll('.ant-modal')].pop();
    if (!modal) { return null; }
    return {
      buttons: [...modal.querySelectorAll('.ant-modal-footer button')].map(b => [b.innerText, !b.disabled]),
      fields: Object.fromEntries([...modal.querySelectorAll('input[name]')].filter(i => i.type !== 'password')
                                 .map(i => [i.name, i.value])),
      messages: [...modal.querySelectorAll('.ant-form-item-explain, [role="alert"], .ant-alert')]
                .map(m => m.innerText.slice(0, 200)),
    };
"""


def modal_button(browser, label: str) -> WebElement:
    """The modal footer's button with this label once it is enabled (after the form validated its fields); if it
    never is, the failure shows what the modal showed."""

    def enabled(d) -> WebElement | bool:
        found = [b for b in d.find_elements(By.CSS_SELECTOR, ".ant-modal-footer button") if b.text == label]
        return found[0] if found and found[0].is_enabled() else False

    try:
        return polling_wait(browser).until(enabled)
    except TimeoutException:
        raise AssertionError(f"no enabled {label!r} button; the modal: {browser.execute_script(MODAL_STATE)}") from None


def pick_option(browser, typed: str, option: str) -> None:
    """Type into the select that has focus, then click the option reading exactly ``option`` once the dropdown
    has drawn and filtered it (before that its options can read as empty texts, and ENTER picks nothing)."""
    browser.switch_to.active_element.send_keys(typed)

    def drawn(d) -> WebElement | bool:
        return next((o for o in shown_options(d) if o.text.strip() == option), False)

    polling_wait(browser, 30).until(drawn).click()


def wait_for_dashboard(browser, charts: int, done: Callable[[dict], bool], stall_s: float = 120,
                       cap_s: float = 900) -> dict:
    """The dashboard state once every one of ``charts`` charts is drawn, none loading, and ``done(state)``.

    A busy machine makes a dashboard slow, not stuck: the wait goes on while charts keep finishing, and fails
    once nothing has changed for ``stall_s`` (or after ``cap_s`` in all), naming the state it saw last."""
    started = last_change = time.monotonic()
    seen: dict = {}
    while True:
        state = browser.execute_script(DASHBOARD_STATE)
        if state["charts"] == charts and state["loading"] == 0 and (state["errors"] or done(state)):
            return state
        now = time.monotonic()
        if state != seen:
            seen, last_change = state, now
        if now - last_change > stall_s or now - started > cap_s:
            raise AssertionError(f"the dashboard stopped progressing after {now - started:.0f} s: {seen}")
        time.sleep(0.25)

#: Creates a dashboard's filter state (``arguments[1]``: the data mask by filter id, as the native filter bar keeps
#: it) and calls back with its key, for ``?native_filters_key=``.
FILTER_STATE = """
    const [slug, mask, done] = arguments;
    let id;
    fetch(`/api/v1/dashboard/${slug}`).then(r => r.json()).then(d => { id = d.result.id; })
      .then(() => fetch('/api/v1/security/csrf_token/')).then(r => r.json())
      .then(t => fetch(`/api/v1/dashboard/${id}/filter_state`, {method: 'POST', body: JSON.stringify(
             {value: JSON.stringify(mask)}), headers: {'Content-Type': 'application/json', 'X-CSRFToken': t.result}}))
      .then(r => r.json()).then(j => done(j.key)).catch(e => done(null));
"""


def filter_state_key(browser, slug: str, time_range: str, filters: dict[str, dict] | None = None) -> str:
    """The key of a new filter state of the dashboard: its time range, and ``filters`` (by filter id, each an
    ``extraFormData`` filter) set as the native filter bar sets them."""
    mask = {"NATIVE_FILTER-time_range": {"id": "NATIVE_FILTER-time_range", "extraFormData": {"time_range": time_range},
                                         "filterState": {"value": time_range}, "ownState": {}}}
    for filter_id, condition in (filters or {}).items():
        mask[filter_id] = {"id": filter_id, "extraFormData": {"filters": [condition]},
                           "filterState": {"value": condition["val"]}, "ownState": {}}
    browser.set_script_timeout(60)
    key = browser.execute_async_script(FILTER_STATE, slug, mask)
    assert key, ("filter state not created", slug)
    return key


#: The axes of every ECharts chart on the page, by chart title, read from the chart's ECharts instance (ECharts draws
#: on canvas): each axis' type and tick labels as drawn (text, whether ECharts hid it for overlapping a neighbour,
#: left and right edge in pixels), the names of the series drawn and the first series' data. Superset keeps the
#: instance in a React ref of its ``Echart`` component, found from the chart's DOM element up its React fiber.
CHART_AXES = """
    function instanceOf(element) {
      const key = Object.keys(element).find(k => k.startsWith('__reactFiber$'));
      for (let fiber = key && element[key]; fiber; fiber = fiber.return) {
        for (let hook = fiber.memoizedState; hook && typeof hook === 'object' && 'next' in hook; hook = hook.next) {
          const value = hook.memoizedState;
          if (value && value.current && typeof value.current.getModel === 'function') return value.current;
        }
      }
      return null;
    }
    const charts = {};
    for (const holder of document.querySelectorAll('[data-test="dashboard-component-chart-holder"]')) {
      const element = holder.querySelector('[_echarts_instance_]');
      const chart = element && instanceOf(element);
      if (!chart) continue;
      const title = holder.querySelector('.header-title, [data-test="editable-title"]')?.innerText
                    || holder.innerText.split('\\n')[0];
      const axes = {};
      for (const view of chart._componentsViews) {
        const model = view.__model;
        if (!model || !['xAxis', 'yAxis'].includes(model.mainType)) continue;
        const labels = [];
        view.group.traverse(e => {
          if (!String(e.anid || '').startsWith('label_')) return;
          const box = e.getBoundingRect().clone();
          box.applyTransform(e.getComputedTransform());
          labels.push({text: e.style.text, shown: !e.ignore && e.style.text !== '', left: box.x,
                       right: box.x + box.width});
        });
        axes[model.mainType] = {type: model.axis.type, labels};
      }
      const series = (chart.getOption() || {}).series;
      if (!series) continue;  // drawn before its option is set: read again on the next poll
      charts[title] = {...axes, series: series.map(s => s.name), data: series[0].data};
    }
    return charts;
"""
