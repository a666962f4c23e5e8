#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run from anywhere; rewrites
the generated seeds, leaves other files, e.g. crash reproducers, alone)."""
import base64
import hashlib
import hmac
import os
import re
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def startup(params, version=196608):
    body = struct.pack("!I", version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# RFC 7677 SCRAM-SHA-256 exchange (user "user", password "pencil").
C_FIRST = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
S_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
C_FINAL = ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
           "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
S_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
sp = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
ck = hmac.new(sp, b"Client Key", hashlib.sha256).digest()
sk = hmac.new(sp, b"Server Key", hashlib.sha256).digest()
SECRET = ("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + base64.b64encode(hashlib.sha256(ck).digest()).decode()
          + ":" + base64.b64encode(sk).decode())

# ---- message bodies (fuzz_messages) and whole frames (fuzz_frame) ----
error_body = (b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"app\"\0"
              b"Fauth.c\0L335\0Rauth_failed\0\0")
notice_body = b"SNOTICE\0VNOTICE\0C00000\0Mthere is no transaction in progress\0Hhint\0Ddetail\0\0"
bodies = {
    "auth_ok": struct.pack("!I", 0),
    "auth_cleartext": struct.pack("!I", 3),
    "auth_md5": struct.pack("!I", 5) + b"\x01\x02\x03\x04",
    "auth_sasl": struct.pack("!I", 10) + b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0",
    "auth_sasl_continue": struct.pack("!I", 11) + S_FIRST.encode(),
    "auth_sasl_final": struct.pack("!I", 12) + S_FINAL.encode(),
    "parameter_status": b"server_version\x0015.6\0",
    "backend_key_data": struct.pack("!II", 4242, 0x12345678),
    "error_response": error_body,
    "notice_response": notice_body,
    "password": b"md5d2fbb0c4b1c2fbd7d1d15c22b2f0b0c1\0",
    "sasl_initial": cstr("SCRAM-SHA-256") + struct.pack("!i", len(C_FIRST)) + C_FIRST.encode(),
    "sasl_initial_empty": cstr("SCRAM-SHA-256") + struct.pack("!i", -1),
    "query": b"SELECT 1; BEGIN; SET search_path = app\0",
    "parse": cstr("s1") + cstr("SELECT $1::int + $2") + struct.pack("!HII", 2, 23, 23),
    "parse_unnamed": cstr("") + cstr("SELECT now()") + struct.pack("!H", 0),
}
for name, body in bodies.items():
    write("fuzz_messages", name, body)

backend = (msg(b"R", bodies["auth_sasl"]) + msg(b"R", bodies["auth_sasl_continue"])
           + msg(b"R", bodies["auth_sasl_final"]) + msg(b"R", bodies["auth_ok"])
           + msg(b"S", bodies["parameter_status"]) + msg(b"S", b"client_encoding\0UTF8\0")
           + msg(b"K", bodies["backend_key_data"]) + msg(b"Z", b"I"))
write("fuzz_frame", "backend_login", backend)
write("fuzz_frame", "backend_error", msg(b"R", bodies["auth_md5"]) + msg(b"E", error_body))
write("fuzz_frame", "frontend_query", msg(b"p", bodies["sasl_initial"]) + msg(b"p", C_FINAL.encode())
      + msg(b"Q", bodies["query"]) + msg(b"X"))
write("fuzz_frame", "frontend_extended", msg(b"P", bodies["parse"])
      + msg(b"B", b"\0s1\0\0\0\0\2\0\0\0\x011\0\0\0\x012\0\0") + msg(b"E", b"\0\0\0\0\0")
      + msg(b"S") + msg(b"N", notice_body) + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"T"))
write("fuzz_frame", "truncated", msg(b"Q", b"SELECT 1\0") + msg(b"Q", b"SELECT 2\0")[:7])
write("fuzz_frame", "invalid_length", msg(b"Z", b"I") + b"Q\0\0\0\x02")

# ---- startup packets (fuzz_startup) ----
write("fuzz_startup", "psql", startup([("user", "app"), ("database", "appdb"),
                                        ("application_name", "psql"), ("client_encoding", "UTF8")]))
write("fuzz_startup", "jdbc", startup([("user", "app"), ("database", "appdb"), ("client_encoding", "UTF8"),
                                        ("DateStyle", "ISO"), ("TimeZone", "Europe/Berlin"),
                                        ("extra_float_digits", "2")]))
write("fuzz_startup", "user_only", startup([("user", "app")]))
write("fuzz_startup", "protocol_3_2", startup([("user", "app"), ("_pq_.x", "1")], version=(3 << 16) | 2))
write("fuzz_startup", "utf8", startup([("user", "jürgen"), ("database", "日本"), ("options", "-c x=1")]))
write("fuzz_startup", "ssl_request", struct.pack("!II", 8, 80877103))
write("fuzz_startup", "gssenc_request", struct.pack("!II", 8, 80877104))
write("fuzz_startup", "cancel_request", struct.pack("!IIII", 16, 80877102, 4242, 0x12345678))
write("fuzz_startup", "protocol_2", struct.pack("!II", 8 + 4, 2 << 16) + b"app\0")
write("fuzz_startup", "no_terminator", startup([("user", "app")])[:-1])

# ---- SCRAM (fuzz_scram): "MSG1\nMSG2" ----
write("fuzz_scram", "rfc7677_server_side", C_FIRST + "\n" + C_FINAL)
write("fuzz_scram", "rfc7677_client_side", S_FIRST + "\n" + S_FINAL)
write("fuzz_scram", "client_side_few_iterations",
      "r=rOprNGfwEbeRWgbNEkqOabc,s=c2FsdHNhbHQ=,i=16\nv=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
write("fuzz_scram", "server_error", S_FIRST + "\ne=invalid-proof")
write("fuzz_scram", "client_first_y", "y,,n=,r=abc\nc=eSws,r=abc%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA")
write("fuzz_scram", "stored_secret", SECRET)
write("fuzz_scram", "sasl_initial_response", bodies["sasl_initial"])

# ---- config files ----
toml_basic = """[pooler]
listen_addr = "127.0.0.1"
listen_port = 6432
pool_mode = "transaction"      # session | transaction | statement
default_pool_size = 20
max_client_conn = 10000
auth_type = "scram-sha-256"    # trust | md5 | scram-sha-256
admin_users = ["admin"]

[users]
app = { password = "app" }
admin = { password = "admin" }

[clusters.main]
primary = { host = "127.0.0.1", port = 55432 }
standby = { host = "127.0.0.1", port = 55433 }

[databases.appdb]
cluster = "main"
"""
toml_full = """[pooler]
listen_addr = "0.0.0.0"
listen_port = 6433
unix_socket_dir = ""
pool_mode = "session"
default_pool_size = 5
min_pool_size = 1
reserve_pool_size = 2
reserve_pool_timeout = 2.5
max_client_conn = 200
max_db_connections = 50
max_user_connections = 40
auth_type = "md5"
auth_file = "userlist.txt"
admin_users = ["admin"]
stats_users = ["stats"]
server_reset_query = "DISCARD ALL"
server_reset_query_always = true
server_check_query = "select 1"
server_check_delay = 10
server_lifetime = 1800
server_idle_timeout = 300
server_connect_timeout = 5
server_login_retry = 1
client_login_timeout = 30
query_timeout = 0
query_wait_timeout = 60
idle_transaction_timeout = 600
client_idle_timeout = 0
ignore_startup_parameters = ["extra_float_digits", "search_path"]
application_name_add_host = true
log_connections = false
log_disconnections = true
pkt_buf = 8192
max_packet_size = 1048576
logfile = "pgpivot.log"

[failover]
health_check_interval = 0.5
health_check_timeout = 1
failure_threshold = 2
auto_failover = true
failover_timeout = 30

[users]
app = { password = "md5d2fbb0c4b1c2fbd7d1d15c22b2f0b0c1", pool_mode = "transaction", pool_size = 3 }
scram = { password = "%s" }
"odd user" = { password = "p\\"w", max_user_connections = 4 }

[clusters.main]
primary = { host = "10.0.0.1", port = 5432, sslmode = "disable" }
standby = { host = "10.0.0.2", port = 5432 }

[clusters.other]
primary = { host = "/var/run/postgresql", port = 5434 }
failover = { auto_failover = false }

[databases.appdb]
cluster = "main"
pool_size = 10
pool_mode = "statement"
connect_query = "SET search_path = app"
application_name = "app"

[databases."*"]
cluster = "other"
dbname = "fallback"
user = "app"
password = "app"
""" % SECRET
write("fuzz_config_toml", "readme.toml", toml_basic)
write("fuzz_config_toml", "full.toml", toml_full)
write("fuzz_config_toml", "errors.toml", '[pooler]\nbogus = 1\npool_mode = "x"\ndefault_pool_size = -3\n'
      '[databases.a]\ncluster = "missing"\n')
with open(os.path.join(REPO, "test/config/example.toml")) as f:
    write("fuzz_config_toml", "test_example.toml", f.read())

for name in ("pgbouncer.ini", "defaults.ini", "pgbouncer-local.ini"):
    with open(os.path.join(REPO, "test/config/pgbouncer", name)) as f:
        write("fuzz_config_ini", name, f.read())
write("fuzz_config_ini", "small.ini", """[databases]
appdb = host=127.0.0.1 port=55432 dbname=appdb pool_size=5 client_encoding=UTF8 timezone=UTC
* = host=localhost port=5432

[users]
app = pool_mode=transaction max_user_connections=3

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
auth_type = scram-sha-256
auth_file = userlist.txt
admin_users = admin
pool_mode = session
default_pool_size = 20
ignore_startup_parameters = extra_float_digits, search_path
server_reset_query = DISCARD ALL
""")


# ---- dictionaries: tokens libFuzzer splices into inputs ----
def dict_file(name, words):
    with open(os.path.join(ROOT, name), "w") as f:
        f.write("# Written by fuzz/gen_corpus.py.\n")
        for w in sorted(set(words)):
            esc = "".join("\\x%02x" % b if b < 0x20 or b > 0x7e or b in (0x22, 0x5c) else chr(b)
                          for b in w.encode())
            f.write('"%s"\n' % esc)


ini_keys = []
with open(os.path.join(REPO, "test/config/pgbouncer/defaults.ini")) as f:
    for line in f:
        m = re.match(r"^([a-z_]+) =", line)
        if m:
            ini_keys.append(m.group(1))
db_keys = ["dbname", "host", "port", "user", "password", "auth_user", "client_encoding", "datestyle",
           "timezone", "pool_size", "min_pool_size", "reserve_pool", "max_db_connections",
           "max_db_client_connections", "pool_mode", "connect_query", "application_name",
           "max_user_connections", "max_user_client_connections", "reserve_pool_size"]
dict_file("fuzz_config_ini.dict", ini_keys + db_keys + [
    "[databases]", "[users]", "[pgbouncer]", "[peers]", "%include ", "userlist.txt", " = ", "=",
    "session", "transaction", "statement", "md5", "scram-sha-256", "trust", "plain", "hba",
    "'", "''", "\n", ";", "*", "yes", "no", "on", "off", "0", "1"])
toml_keys = re.findall(r"^([a-z_]+) =", toml_full, re.M)
dict_file("fuzz_config_toml.dict", toml_keys + db_keys + [
    "[pooler]", "[users]", "[failover]", "[clusters.main]", "[clusters.", "[databases.", '[databases."*"]',
    "primary", "standby", "cluster", '{ host = "h", port = 5432 }', " = ", '"""', "'''", "[[", "]]",
    "true", "false", "inf", "nan", "1e3", "0x10", "1979-05-27T07:32:00Z", '"userlist.txt"',
    '"session"', '"transaction"', '"statement"', '"md5"', '"scram-sha-256"', '"trust"',
    "\\u00e9", "\n", "#", ",", "{", "}", "[", "]"])
dict_file("fuzz_scram.dict", ["n,,", "y,,", "p=tls-server-end-point,,", "n=", "r=", "s=", "i=", "c=", "p=",
                              "v=", "e=", "m=", "a=", ",", "biws", "eSws", "=2C", "=3D", "SCRAM-SHA-256$",
                              "SCRAM-SHA-256", "rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                              "W22ZaJ0SNY7soEsUEjb6gQ==", "4096", "==", "\n"])
