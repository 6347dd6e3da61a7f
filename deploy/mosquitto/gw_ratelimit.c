/*
 * gridwatch per-device publish rate limit: a Mosquitto 2.0 plugin (plugin API version 5).
 *
 * Why at the broker: Mosquitto 2.0 has no per-client rate limit, and a device that floods the broker
 * fills the bridge's session queue; at that queue's bound Mosquitto drops every device's messages after
 * acknowledging them. Denied here, junk never reaches the bridge's queue; a device that keeps flooding is
 * disconnected and its logins are refused for a while, so the flood stops costing the broker CPU.
 *
 * What is limited: every client that logged in with a username (on the device listener a device's
 * client id is its username), keyed by that username, except the usernames in `exempt` (the pipeline's
 * service accounts). Clients without a username (only possible on a password-less listener: tests and
 * the demo) are not limited: there is no device identity to hold them to.
 *
 * Per username, two token buckets are checked on each incoming PUBLISH (MOSQ_EVT_MESSAGE, after the
 * ACL): messages and payload bytes. A PUBLISH with too few tokens in either is denied: QoS 0 is
 * dropped, QoS 1 is acknowledged with reason "not authorised" (MQTT 5; MQTT 3.1.1 has no reason code,
 * so the message is dropped after a plain PUBACK). A device denied for `ban_after_s` seconds without a
 * quiet second in between is disconnected and its logins are refused for `ban_s` seconds (CONNACK
 * "not authorised"); each of these is logged once with the username.
 *
 * Options (plugin_opt_<name> in mosquitto.conf):
 *   msg_rate, msg_burst     messages per second, and at most this many at once
 *   byte_rate, byte_burst   payload bytes per second, and at most this many at once
 *   ban_after_s, ban_s      denied this long -> disconnected and refused this long (ban_s 0: never banned)
 *   exempt                  comma-separated usernames that are never limited
 *   passwords               "file" (default): a login not banned is passed on to the password file;
 *                           "none": this broker checks no passwords (allow_anonymous, no password_file),
 *                           so a login not banned is accepted here
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define TAG "gridwatch-ratelimit"
#define BUCKETS 65536u
#define IDLE_FORGET_S 600.0 /* a username quiet this long (and not banned) is forgotten */
#define QUIET_S 1.0         /* a second without a denial ends an over-limit run */

struct limits {
	double msg_rate, msg_burst, byte_rate, byte_burst, ban_after_s, ban_s;
	char **exempt;
	int exempt_count;
	int passwords_none;
};

struct client_state {
	struct client_state *next;
	char *username;
	double msg_tokens, byte_tokens, last_refill;
	double over_since; /* first denial of the current run; 0 = not over */
	double last_denied;
	double banned_until;
	unsigned long denied; /* in the current run */
	unsigned long refused; /* logins refused in the current ban */
};

static struct limits cfg;
static struct client_state *table[BUCKETS];
static int users; /* listeners that loaded this plugin: the state is shared, freed with the last */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t hash(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for(; *s; s++){
		h = (h ^ (uint8_t)*s) * 16777619u;
	}
	return h % BUCKETS;
}

static int exempt(const char *username)
{
	for(int i = 0; i < cfg.exempt_count; i++){
		if(!strcmp(cfg.exempt[i], username)) return 1;
	}
	return 0;
}

/* The state of this username; forgets idle ones on the way. NULL when unknown and not `create`
 * (a login is looked up before its password is checked: random usernames must not grow the table),
 * or when out of memory. */
static struct client_state *lookup(const char *username, double now, int create)
{
	struct client_state **pp = &table[hash(username)];
	while(*pp){
		struct client_state *c = *pp;
		if(!strcmp(c->username, username)) return c;
		if(now - c->last_refill > IDLE_FORGET_S && now >= c->banned_until){
			*pp = c->next;
			free(c->username);
			free(c);
			continue;
		}
		pp = &c->next;
	}
	if(!create) return NULL;
	struct client_state *c = calloc(1, sizeof(*c));
	if(!c) return NULL;
	c->username = strdup(username);
	if(!c->username){
		free(c);
		return NULL;
	}
	c->msg_tokens = cfg.msg_burst;
	c->byte_tokens = cfg.byte_burst;
	c->last_refill = now;
	c->next = table[hash(username)];
	table[hash(username)] = c;
	return c;
}

static double refill(double tokens, double rate, double burst, double dt)
{
	tokens += rate * dt;
	return tokens > burst ? burst : tokens;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	(void)event;
	(void)userdata;
	const char *username = mosquitto_client_username(ed->client);
	if(!username || exempt(username)) return MOSQ_ERR_SUCCESS;
	double now = now_s();
	struct client_state *c = lookup(username, now, 1);
	if(!c) return MOSQ_ERR_SUCCESS; /* out of memory: the broker's own limits still hold */
	if(now < c->banned_until){ /* still connected from before the ban took effect */
		mosquitto_kick_client_by_username(username, false);
		return MOSQ_ERR_ACL_DENIED;
	}
	double dt = now - c->last_refill;
	c->last_refill = now;
	c->msg_tokens = refill(c->msg_tokens, cfg.msg_rate, cfg.msg_burst, dt);
	c->byte_tokens = refill(c->byte_tokens, cfg.byte_rate, cfg.byte_burst, dt);
	if(c->msg_tokens >= 1.0 && c->byte_tokens >= (double)ed->payloadlen){
		c->msg_tokens -= 1.0;
		c->byte_tokens -= (double)ed->payloadlen;
		if(c->over_since > 0 && now - c->last_denied > QUIET_S){
			mosquitto_log_printf(MOSQ_LOG_WARNING, TAG ": 设备 %s 恢复正常 / device %s is back under its publish "
					"limit (%lu messages denied)", username, username, c->denied);
			c->over_since = 0;
			c->denied = 0;
		}
		return MOSQ_ERR_SUCCESS;
	}
	if(c->over_since == 0 || now - c->last_denied > QUIET_S){
		if(c->over_since == 0){
			mosquitto_log_printf(MOSQ_LOG_WARNING, TAG ": 设备 %s 超出发布限额 / device %s is over its publish limit "
					"(%.0f messages/s, %.0f bytes/s): its excess messages are denied", username, username,
					cfg.msg_rate, cfg.byte_rate);
		}
		c->over_since = now;
		c->denied = 0;
	}
	c->last_denied = now;
	c->denied++;
	if(cfg.ban_s > 0 && now - c->over_since >= cfg.ban_after_s){
		c->banned_until = now + cfg.ban_s;
		c->refused = 0;
		mosquitto_log_printf(MOSQ_LOG_WARNING, TAG ": 设备 %s 持续超限，已断开并禁止登录 %.0f 秒 / device %s stayed over "
				"its publish limit for %.0f s (%lu messages denied): disconnected, logins refused for %.0f s",
				username, cfg.ban_s, username, now - c->over_since, c->denied, cfg.ban_s);
		c->over_since = 0;
		c->denied = 0;
		mosquitto_kick_client_by_username(username, false);
	}
	return MOSQ_ERR_ACL_DENIED;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	(void)event;
	(void)userdata;
	const char *username = ed->username;
	int pass = cfg.passwords_none ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
	if(!username) return MOSQ_ERR_PLUGIN_DEFER; /* anonymous: the broker's allow_anonymous decides */
	if(exempt(username)) return pass;
	double now = now_s();
	struct client_state *c = lookup(username, now, 0);
	if(c && now < c->banned_until){
		if(c->refused++ == 0){
			mosquitto_log_printf(MOSQ_LOG_WARNING, TAG ": 设备 %s 在禁止期内登录被拒 / device %s is banned for "
					"flooding: login refused (%.0f s left)", username, username, c->banned_until - now);
		}
		return MOSQ_ERR_AUTH;
	}
	return pass;
}

static int parse_number(const char *key, const char *value, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(value, &end);
	if(errno || end == value || *end || !(v >= 0) || v > 1e15){
		mosquitto_log_printf(MOSQ_LOG_ERR, TAG ": plugin_opt_%s must be a number >= 0, got \"%s\"", key, value);
		return MOSQ_ERR_INVAL;
	}
	*out = v;
	return MOSQ_ERR_SUCCESS;
}

static int parse_exempt(const char *value)
{
	char *copy = strdup(value);
	if(!copy) return MOSQ_ERR_NOMEM;
	char *save = NULL;
	for(char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)){
		while(*tok == ' ') tok++;
		if(!*tok) continue;
		char **grown = realloc(cfg.exempt, sizeof(char *) * (size_t)(cfg.exempt_count + 1));
		if(!grown){
			free(copy);
			return MOSQ_ERR_NOMEM;
		}
		cfg.exempt = grown;
		cfg.exempt[cfg.exempt_count] = strdup(tok);
		if(!cfg.exempt[cfg.exempt_count]){
			free(copy);
			return MOSQ_ERR_NOMEM;
		}
		cfg.exempt_count++;
	}
	free(copy);
	return MOSQ_ERR_SUCCESS;
}

static int configure(struct mosquitto_opt *opts, int opt_count)
{
	struct {
		const char *key;
		double *dst;
	} numbers[] = {
		{"msg_rate", &cfg.msg_rate}, {"msg_burst", &cfg.msg_burst}, {"byte_rate", &cfg.byte_rate},
		{"byte_burst", &cfg.byte_burst}, {"ban_after_s", &cfg.ban_after_s}, {"ban_s", &cfg.ban_s},
	};
	const size_t n_numbers = sizeof(numbers) / sizeof(numbers[0]);
	int seen = 0;
	for(int i = 0; i < opt_count; i++){
		int known = 0;
		for(size_t k = 0; k < n_numbers; k++){
			if(!strcmp(opts[i].key, numbers[k].key)){
				if(parse_number(opts[i].key, opts[i].value, numbers[k].dst)) return MOSQ_ERR_INVAL;
				seen |= 1 << k;
				known = 1;
			}
		}
		if(!strcmp(opts[i].key, "exempt")){
			if(parse_exempt(opts[i].value)) return MOSQ_ERR_NOMEM;
			known = 1;
		}else if(!strcmp(opts[i].key, "passwords")){
			if(strcmp(opts[i].value, "file") && strcmp(opts[i].value, "none")){
				mosquitto_log_printf(MOSQ_LOG_ERR, TAG ": plugin_opt_passwords must be file or none, got \"%s\"",
						opts[i].value);
				return MOSQ_ERR_INVAL;
			}
			cfg.passwords_none = !strcmp(opts[i].value, "none");
			known = 1;
		}
		if(!known){
			mosquitto_log_printf(MOSQ_LOG_ERR, TAG ": unknown option plugin_opt_%s", opts[i].key);
			return MOSQ_ERR_INVAL;
		}
	}
	for(size_t k = 0; k < n_numbers; k++){
		if(!(seen & (1 << k))){
			mosquitto_log_printf(MOSQ_LOG_ERR, TAG ": plugin_opt_%s is missing", numbers[k].key);
			return MOSQ_ERR_INVAL;
		}
	}
	if(cfg.msg_rate <= 0 || cfg.byte_rate <= 0 || cfg.msg_burst < 1 || cfg.byte_burst < 1){
		mosquitto_log_printf(MOSQ_LOG_ERR, TAG ": rates must be > 0 and bursts >= 1");
		return MOSQ_ERR_INVAL;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data, struct mosquitto_opt *opts, int opt_count)
{
	int rc;
	*user_data = identifier;
	if(users == 0){
		rc = configure(opts, opt_count);
		if(rc) return rc;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, TAG ": per-device publish limit %.0f messages/s (burst %.0f), %.0f bytes/s "
				"(burst %.0f); denied for %.0f s -> banned for %.0f s; %d usernames exempt", cfg.msg_rate,
				cfg.msg_burst, cfg.byte_rate, cfg.byte_burst, cfg.ban_after_s, cfg.ban_s, cfg.exempt_count);
	}
	users++;
	rc = mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
	if(rc) return rc;
	return mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	mosquitto_plugin_id_t *identifier = user_data;
	(void)opts;
	(void)opt_count;
	mosquitto_callback_unregister(identifier, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	if(--users > 0) return MOSQ_ERR_SUCCESS;
	for(unsigned b = 0; b < BUCKETS; b++){
		while(table[b]){
			struct client_state *c = table[b];
			table[b] = c->next;
			free(c->username);
			free(c);
		}
	}
	for(int i = 0; i < cfg.exempt_count; i++) free(cfg.exempt[i]);
	free(cfg.exempt);
	memset(&cfg, 0, sizeof(cfg));
	return MOSQ_ERR_SUCCESS;
}
