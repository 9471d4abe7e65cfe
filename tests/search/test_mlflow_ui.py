"""The MLflow UI as a person uses it: Debian's Chromium, headless, driven by selenium, on a
finished sweep served by the embedded MLflow server. Screenshots stay in the test's tmp dir."""

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as shown
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium, chromium-driver
# this machine has no internet: without these Chromium keeps dialling Google's services
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=2400,1200")


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def find(browser, xpath: str):
    return WebDriverWait(browser, 30).until(shown.visibility_of_element_located((By.XPATH, xpath)))


def click_text(browser, text: str, tag: str = "*") -> None:
    xpath = f"//{tag}[normalize-space(.)='{text}']"
    WebDriverWait(browser, 30).until(shown.element_to_be_clickable((By.XPATH, xpath))).click()


def page_shows(browser, *texts: str) -> None:
    """Wait until every text is on the page (the UI renders asynchronously)."""
    def all_there(driver):
        body = driver.find_element(By.TAG_NAME, "body").text
        return all(t in body for t in texts)

    try:
        WebDriverWait(browser, 30).until(all_there)
    except Exception:
        body = browser.find_element(By.TAG_NAME, "body").text
        missing = [t for t in texts if t not in body]
        raise AssertionError(f"not on the page: {missing}\n--- page text ---\n{body[:3000]}") from None


def test_experiment_page_lists_trials_with_metrics_and_their_artifacts(four_trials, browser, tmp_path):
    trials = four_trials.to_dataframe()
    browser.get(four_trials.tracking_uri)
    click_text(browser, "Model training")  # MLflow 3 opens on its GenAI pages
    click_text(browser, four_trials.experiment_name, tag="a")
    page_shows(browser, "Runs", four_trials.sweep.name)

    # the sweep's parent run is collapsed: open it to list its trials
    name = four_trials.sweep.name
    parent = find(browser, f"//a[normalize-space(.)='{name}' and contains(@href, '/runs/')]")
    parent.find_element(By.XPATH, "./ancestor::*[@role='row'][1]//button").click()
    page_shows(browser, *trials["run_name"])

    # add the val_accuracy and density columns, as one does from the Columns menu
    click_text(browser, "Columns", tag="button")
    click_text(browser, "val_accuracy")
    click_text(browser, "density")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    page_shows(browser, "val_accuracy", *[str(v) for v in trials["metrics.val_accuracy"]])  # shown unrounded
    browser.save_screenshot(str(tmp_path / "experiment.png"))

    best = four_trials.best()
    experiment_id = four_trials.data().experiment_id
    browser.get(f"{four_trials.tracking_uri}/#/experiments/{experiment_id}/runs/{best['run_id']}/artifacts")
    page_shows(browser, "masks", "plots", "model", "layer_density.csv")
    click_text(browser, "masks")
    page_shows(browser, "final.bin", "lineage.jsonl")
    click_text(browser, "plots")
    page_shows(browser, "training.png", "layer_density.png")
    click_text(browser, "training.png")
    WebDriverWait(browser, 30).until(
        lambda driver: any(img.size["height"] > 100 for img in driver.find_elements(By.TAG_NAME, "img"))
    )  # the plot is previewed as an image
    browser.save_screenshot(str(tmp_path / "artifacts.png"))
    assert (tmp_path / "experiment.png").stat().st_size > 10_000

