"""
psycopg2 through Tessera's pooler (tests/pooler_psycopg_test.ts runs it): each case prints its
name and "ok", or "FAIL" and the error. Two threads keep other connections borrowing the pool's
few backends all along, so consecutive transactions of one connection land on different ones.
Usage: psycopg2_pooler.py PORT
"""
import sys, threading, time, select
import psycopg2, psycopg2.extensions, psycopg2.extras
PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=postgres dbname=postgres"
results = []
def check(name, fn):
    try:
        fn(); results.append((name, "ok", ""))
    except Exception as e:
        results.append((name, "FAIL", f"{type(e).__name__}: {str(e).strip()[:200]}"))

def churn(stop):
    cs = [psycopg2.connect(DSN) for _ in range(6)]
    for c in cs: c.autocommit = True
    while not stop.is_set():
        for c in cs:
            cur = c.cursor(); cur.execute("select pg_sleep(0.001)"); cur.fetchall()
stop = threading.Event()
threads = [threading.Thread(target=churn, args=(stop,)) for _ in range(2)]
for t in threads: t.start()

def named_cursor():
    c = psycopg2.connect(DSN)
    cur = c.cursor(name="big")  # DECLARE in a transaction
    cur.itersize = 100
    cur.execute("select g from generate_series(1, 1000) g")
    n = sum(1 for _ in cur)
    assert n == 1000, n
    c.commit(); c.close()
def hold_cursor():
    c = psycopg2.connect(DSN)
    cur = c.cursor(name="held", withhold=True)
    cur.execute("select g from generate_series(1, 500) g")
    c.commit()
    rows = []
    for _ in range(5):
        rows += cur.fetchmany(100); c.commit()
    assert len(rows) == 500, len(rows)
    cur.close(); c.commit(); c.close()
def executemany_and_batch():
    c = psycopg2.connect(DSN); cur = c.cursor()
    cur.execute("create temp table em(a int, b text)")
    cur.executemany("insert into em values (%s, %s)", [(i, str(i)) for i in range(200)])
    psycopg2.extras.execute_values(cur, "insert into em values %s", [(i, 'v') for i in range(300)])
    c.commit()
    for _ in range(20):
        cur.execute("select count(*) from em"); assert cur.fetchone()[0] == 500
        c.commit()
    c.close()
def copy_expert():
    import io
    c = psycopg2.connect(DSN); cur = c.cursor()
    cur.execute("create temp table cp(a int, b text)"); c.commit()
    buf = io.StringIO("".join(f"{i}\tx{i}\n" for i in range(1000)))
    cur.copy_expert("copy cp from stdin", buf); c.commit()
    out = io.StringIO(); cur.copy_expert("copy (select * from cp order by a) to stdout", out); c.commit()
    assert out.getvalue().count("\n") == 1000
    c.close()
def isolation_and_readonly():
    c = psycopg2.connect(DSN)
    c.set_session(isolation_level="SERIALIZABLE", readonly=True)
    for _ in range(20):
        cur = c.cursor(); cur.execute("show transaction_isolation"); v = cur.fetchone()[0]
        assert v == "serializable", v
        cur.execute("show transaction_read_only"); assert cur.fetchone()[0] == "on"
        c.commit()
    c.close()
def autocommit_toggle_settings():
    c = psycopg2.connect(DSN, options="-c statement_timeout=12345")
    c.autocommit = True; cur = c.cursor()
    cur.execute("set search_path to pg_catalog, public"); cur.execute("set timezone to 'Asia/Tokyo'")
    for _ in range(30):
        cur.execute("show search_path"); assert cur.fetchone()[0] == "pg_catalog, public"
        cur.execute("show timezone"); assert cur.fetchone()[0] == "Asia/Tokyo"
        cur.execute("show statement_timeout"); v = cur.fetchone()[0]; assert v == "12345ms", v
    c.autocommit = False
    cur.execute("set local timezone to 'UTC'"); cur.execute("show timezone"); assert cur.fetchone()[0] == "UTC"
    c.commit()
    cur.execute("show timezone"); assert cur.fetchone()[0] == "Asia/Tokyo"; c.commit()
    c.close()
def savepoints():
    c = psycopg2.connect(DSN); cur = c.cursor()
    cur.execute("create temp table sp(a int primary key)")
    cur.execute("savepoint s1"); cur.execute("insert into sp values (1)")
    cur.execute("savepoint s2")
    try:
        cur.execute("insert into sp values (1)"); raise AssertionError("no error")
    except psycopg2.errors.UniqueViolation: pass
    cur.execute("rollback to savepoint s2"); cur.execute("insert into sp values (2)")
    c.commit(); cur.execute("select count(*) from sp"); assert cur.fetchone()[0] == 2
    c.close()
def notify():
    a = psycopg2.connect(DSN); a.autocommit = True
    b = psycopg2.connect(DSN); b.autocommit = True
    a.cursor().execute("listen chan")
    for i in range(10):
        b.cursor().execute(f"notify chan, 'm{i}'")
    deadline = time.time() + 5; got = []
    while len(got) < 10 and time.time() < deadline:
        if select.select([a], [], [], 0.5)[0]:
            a.poll(); got += [n.payload for n in a.notifies]; a.notifies.clear()
    assert got == [f"m{i}" for i in range(10)], got
    a.close(); b.close()
def two_phase():
    c = psycopg2.connect(DSN); cur = c.cursor()
    cur.execute("create table tpc_t (a int)"); c.commit()
    x = c.xid(1, "tessera-g1", "bq")
    c.tpc_begin(x); cur.execute("insert into tpc_t values (7)"); c.tpc_prepare()
    d = psycopg2.connect(DSN); d.autocommit = True; dc = d.cursor()
    dc.execute("select count(*) from tpc_t"); assert dc.fetchone()[0] == 0, "visible before commit"
    # Any other connection may finish it: the prepared transaction belongs to no backend.
    e = psycopg2.connect(DSN)
    xs = [t for t in e.tpc_recover() if t.gtrid == "tessera-g1"]
    assert len(xs) == 1, xs
    e.tpc_commit(xs[0]); e.close(); c.close()
    dc.execute("select count(*) from tpc_t"); assert dc.fetchone()[0] == 1
    r = psycopg2.connect(DSN); rc = r.cursor()
    r.tpc_begin(r.xid(2, "tessera-g2", "bq")); rc.execute("insert into tpc_t values (8)")
    r.tpc_prepare(); r.tpc_rollback(); r.close()
    dc.execute("select count(*) from tpc_t"); assert dc.fetchone()[0] == 1
    dc.execute("select count(*) from pg_prepared_xacts"); assert dc.fetchone()[0] == 0
    dc.execute("drop table tpc_t"); d.close()
def do_block_state():
    # State made by code the pooler cannot read (a DO block) follows the client all the same.
    c = psycopg2.connect(DSN); c.autocommit = True; cur = c.cursor()
    cur.execute("do $$ begin create temp table do_tmp (a int); insert into do_tmp values (1); end $$")
    for _ in range(20):
        cur.execute("select count(*) from do_tmp"); assert cur.fetchone()[0] == 1
    cur.execute("drop table do_tmp")
    cur.execute("do $$ begin perform set_config('work_mem', '5MB', false); "
                "perform set_config('app.tenant', 't7', false); end $$")
    for _ in range(20):
        cur.execute("show work_mem"); assert cur.fetchone()[0] == "5MB"
        cur.execute("select current_setting('app.tenant')"); assert cur.fetchone()[0] == "t7"
    c.close()
def call_procedure():
    c = psycopg2.connect(DSN); c.autocommit = True; cur = c.cursor()
    cur.execute("create procedure mk_tmp() language plpgsql as "
                "$$ begin create temp table proc_tmp (a int); end $$")
    cur.execute("call mk_tmp()")
    for _ in range(20):
        cur.execute("insert into proc_tmp values (1)")
    cur.execute("select count(*) from proc_tmp"); assert cur.fetchone()[0] == 20
    cur.execute("drop table proc_tmp"); cur.execute("drop procedure mk_tmp")
    c.close()
def errors_keep_session():
    c = psycopg2.connect(DSN); c.autocommit = True; cur = c.cursor()
    for _ in range(10):
        try: cur.execute("select 1/0")
        except psycopg2.errors.DivisionByZero: pass
        cur.execute("select 2"); assert cur.fetchone()[0] == 2
    c.close()
def notices():
    c = psycopg2.connect(DSN); c.autocommit = True; cur = c.cursor()
    cur.execute("do $$ begin raise notice 'hello %', 42; end $$")
    assert any("hello 42" in n for n in c.notices), c.notices
    c.close()
def backend_pid_cancel():
    c = psycopg2.connect(DSN); c.autocommit = True; cur = c.cursor()
    pid = c.get_backend_pid(); cur.execute("select pg_backend_pid()"); assert cur.fetchone()[0] == pid
    def later(): time.sleep(0.3); c.cancel()
    threading.Thread(target=later).start()
    try: cur.execute("select pg_sleep(5)"); raise AssertionError("not cancelled")
    except psycopg2.errors.QueryCanceled: pass
    cur.execute("select 3"); assert cur.fetchone()[0] == 3
    c.close()
def large_result():
    c = psycopg2.connect(DSN); c.autocommit = True; cur = c.cursor()
    cur.execute("select repeat('x', 1000) from generate_series(1, 20000)"); assert len(cur.fetchall()) == 20000
    c.close()
def prepare_sql():
    c = psycopg2.connect(DSN); c.autocommit = True; cur = c.cursor()
    cur.execute("prepare q(int) as select $1 + 1")
    for i in range(30): cur.execute("execute q(%s)", (i,)); assert cur.fetchone()[0] == i + 1
    cur.execute("deallocate q"); c.close()
def advisory_lock():
    c = psycopg2.connect(DSN); c.autocommit = True; cur = c.cursor()
    cur.execute("select pg_advisory_lock(42)")
    d = psycopg2.connect(DSN); d.autocommit = True; dc = d.cursor()
    dc.execute("select pg_try_advisory_lock(42)"); assert dc.fetchone()[0] is False
    cur.execute("select pg_advisory_unlock(42)")
    dc.execute("select pg_try_advisory_lock(42)"); assert dc.fetchone()[0] is True
    dc.execute("select pg_advisory_unlock(42)")
    c.close(); d.close()
def lobject():
    c = psycopg2.connect(DSN)
    lo = c.lobject(0, "wb"); lo.write(b"hello large object"); oid = lo.oid; lo.close(); c.commit()
    lo = c.lobject(oid, "rb"); assert lo.read() == b"hello large object"; lo.close(); lo.unlink(); c.commit()
    c.close()
def async_conn():
    c = psycopg2.connect(DSN, async_=1)
    def wait(conn):
        while True:
            s = conn.poll()
            if s == psycopg2.extensions.POLL_OK: return
            elif s == psycopg2.extensions.POLL_READ: select.select([conn.fileno()], [], [])
            elif s == psycopg2.extensions.POLL_WRITE: select.select([], [conn.fileno()], [])
    wait(c); cur = c.cursor(); cur.execute("select 42"); wait(c); assert cur.fetchone()[0] == 42; c.close()

for name, fn in list(globals().items()):
    if callable(fn) and name not in ("check", "churn") and getattr(fn, "__module__", "") == "__main__":
        check(name, fn)
stop.set()
for t in threads: t.join()
for r in results: print(*r)
