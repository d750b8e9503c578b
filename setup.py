"""The top-level folders of DESIGN.md (streams/, rules/, ...) install as ``atalaia.<folder>``."""

from setuptools import find_packages, setup

ROOTS = ["streams", "rules", "detectors", "incidents", "notifiers", "console", "warnings"]

packages, package_dir = [], {}
for root in ROOTS:
    package_dir[f"atalaia.{root}"] = root
    packages.append(f"atalaia.{root}")
    packages += [f"atalaia.{root}.{sub}" for sub in find_packages(root)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "atalaia.console": ["static/*", "static/**/*", "migrations/*.sql"],
        "atalaia.incidents": ["migrations/*.sql"],
        "atalaia.warnings": ["schema/*.xsd"],
        "atalaia.rules": ["sdm/*.json", "sdm/*.md"],
    },
    include_package_data=True,
)
