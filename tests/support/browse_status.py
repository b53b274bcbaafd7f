#!/usr/bin/env python3
"""Open a `fhirlake status --html` page in headless Chromium and read it back.

Usage: browse_status.py PAGE.html SCREENSHOT.png
Drives Debian's chromium through its chromedriver with Selenium (no driver
download: both paths are given, SE_OFFLINE is set). Prints one JSON object:
what a person sees on the page — each table's name and rows as rendered text,
the quarantine reasons, the audit verdict, the size each chart was laid out
at — and the screenshot's path and pixel size.
"""
import json
import os
import struct
import sys

os.environ.setdefault("SE_OFFLINE", "true")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

page, shot = sys.argv[1], sys.argv[2]
options = webdriver.ChromeOptions()
options.binary_location = os.environ.get("FHIRLAKE_CHROMIUM", "/usr/bin/chromium")
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900"):
    options.add_argument(arg)
service = webdriver.ChromeService(
    executable_path=os.environ.get("FHIRLAKE_CHROMEDRIVER", "/usr/bin/chromedriver"))
driver = webdriver.Chrome(options=options, service=service)
try:
    driver.get("file://" + os.path.abspath(page))
    visible = lambda e: e.is_displayed() and e.size["width"] > 0 and e.size["height"] > 0  # noqa: E731
    tables = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-table]"):
        name = row.find_element(By.CSS_SELECTOR, "td.name")
        rows = row.find_element(By.CSS_SELECTOR, "td.rows")
        if visible(name) and visible(rows):
            tables[name.text] = rows.text
    reasons = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-reason]"):
        reasons[row.find_element(By.CSS_SELECTOR, "td.name").text] = \
            row.find_element(By.CSS_SELECTOR, "td.count").text
    jobs = [row.find_element(By.CSS_SELECTOR, "td.name").text
            for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-job]")]
    charts = [[svg.get_attribute("class"), svg.size["width"], svg.size["height"]]
              for svg in driver.find_elements(By.TAG_NAME, "svg")]
    cards = {card.get_attribute("id"): card.find_element(By.CSS_SELECTOR, ".value").text
             for card in driver.find_elements(By.CSS_SELECTOR, ".card")}
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 200, 600), 8000))
    driver.save_screenshot(shot)
    with open(shot, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    print(json.dumps({
        "title": driver.title,
        "verdict": driver.find_element(By.ID, "verify-verdict").text,
        "tables": tables,
        "reasons": reasons,
        "jobs": jobs,
        "cards": cards,
        "charts": charts,
        "screenshot": {"path": shot, "width": width, "height": height,
                       "bytes": os.path.getsize(shot)},
    }))
finally:
    driver.quit()
