from setuptools import find_packages, setup

setup(
    name="relay",
    version="0.1.0",
    description="A durable message relay for AI agents (agent-relay wire protocol v1), on Twisted",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    # The Python CI runs (.ci/run); README.rst says how to try another.
    python_requires="==3.11.*",
    packages=find_packages(include=["relay", "relay.*"]) + ["twisted.plugins"],
    package_data={
        "relay": ["schema/*.sql"],
        "relay.web": ["static/*.html", "static/*.js", "static/*.css"],
        "relay.ingest": ["migrations/*.sql"],
        "twisted.plugins": ["relay_plugin.py", "relay_ingest_plugin.py"],
    },
    include_package_data=True,
    # Both ends of each range are what .ci/run tests: the lower ends are
    # pinned in .ci/oldest.txt (Twisted 22.10.0, the first with Python 3.11,
    # and the treq, txpostgres and pyOpenSSL of its time); the upper ends
    # are what `pip install '.[test]'` resolves to today.  relay/compat.py
    # holds the API differences between them.
    install_requires=[
        "twisted[tls]>=22.10.0,<=26.10.0",
        "treq>=22.2.0,<=26.7.0",
        "txpostgres==1.7.0",
        "psycopg2-binary>=2.9.5",
        "pyopenssl>=22.1.0,<=26.4.0",
        "service_identity>=21.1.0,<=26.1.0",
        "zope.interface>=5.5.2",
        "orjson>=3.9.0",
        "prometheus_client>=0.17.0",
    ],
    extras_require={
        "test": ["hypothesis>=6.0", "wheel>=0.40", "selenium>=4.10"],
        # bench_core.py --profile (py-spy) and the flame graph's PNG (cairosvg).
        "profile": ["py-spy>=0.3", "cairosvg>=2.5"],
    },
    entry_points={"console_scripts": ["relay = relay.cli:main"]},
)
