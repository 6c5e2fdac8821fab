/*
 * Checks monitor and notification-channel bodies with the Alerting and Notifications
 * plugins' own model classes (org.opensearch:common-utils, the version Alerting 2.19.6
 * bundles) on OpenSearch's own jars. The plugins cannot run on the local test node, so
 * this is how CI learns what their REST layer would refuse.
 *
 * Input (stdin), one object per line:  <kind> TAB <label> TAB <compact JSON body>
 *   kind = monitor              body as sent to POST _plugins/_alerting/monitors
 *   kind = notification_channel  body as sent to POST _plugins/_notifications/configs
 * Output (stdout), one JSON object per input line, in order:
 *   {"kind", "label", "ok": true, "stored": "<what the plugin stores, as JSON>", "deprecations": [...]}
 *   {"kind", "label", "ok": false, "stage", "status", "error", "cause", "deprecations": [...]}
 * where stage says which step refused the body:
 *   parse      the REST handler: body parsed with the model's parse(), then the handler's own checks
 *   validate   ActionRequest.validate() (run by the transport layer before the action)
 *   transport  the transport action's checks that need no cluster state
 *   stored     the stored form (what the plugin indexes) does not parse back the way the plugin reads it
 * `error` is the message a user would get back (for Alerting: AlertingException.wrap's message).
 */

import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Supplier;

import org.opensearch.ExceptionsHelper;
import org.opensearch.action.ActionRequestValidationException;
import org.opensearch.action.support.WriteRequest;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.unit.TimeValue;
import org.opensearch.common.xcontent.XContentFactory;
import org.opensearch.common.xcontent.json.JsonXContent;
import org.opensearch.commons.alerting.action.IndexMonitorRequest;
import org.opensearch.commons.alerting.model.BucketLevelTrigger;
import org.opensearch.commons.alerting.model.ChainedAlertTrigger;
import org.opensearch.commons.alerting.model.ClusterMetricsInput;
import org.opensearch.commons.alerting.model.DataSources;
import org.opensearch.commons.alerting.model.DocLevelMonitorInput;
import org.opensearch.commons.alerting.model.DocLevelQuery;
import org.opensearch.commons.alerting.model.DocumentLevelTrigger;
import org.opensearch.commons.alerting.model.Input;
import org.opensearch.commons.alerting.model.Monitor;
import org.opensearch.commons.alerting.model.QueryLevelTrigger;
import org.opensearch.commons.alerting.model.ScheduledJob;
import org.opensearch.commons.alerting.model.SearchInput;
import org.opensearch.commons.alerting.model.Trigger;
import org.opensearch.commons.alerting.model.Workflow;
import org.opensearch.commons.alerting.model.action.Action;
import org.opensearch.commons.alerting.model.remote.monitors.RemoteMonitorTrigger;
import org.opensearch.commons.alerting.util.AlertingException;
import org.opensearch.commons.alerting.util.IndexUtilsKt;
import org.opensearch.commons.notifications.action.CreateNotificationConfigRequest;
import org.opensearch.commons.notifications.model.ConfigType;
import org.opensearch.commons.notifications.model.Email;
import org.opensearch.commons.notifications.model.MicrosoftTeams;
import org.opensearch.commons.notifications.model.NotificationConfig;
import org.opensearch.commons.utils.ValidationHelpersKt;
import org.opensearch.core.common.bytes.BytesReference;
import org.opensearch.core.rest.RestStatus;
import org.opensearch.core.xcontent.DeprecationHandler;
import org.opensearch.core.xcontent.NamedXContentRegistry;
import org.opensearch.core.xcontent.ToXContent;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.core.xcontent.XContentLocation;
import org.opensearch.core.xcontent.XContentParser;
import org.opensearch.core.xcontent.XContentParserUtils;
import org.opensearch.index.seqno.SequenceNumbers;
import org.opensearch.rest.RestRequest;
import org.opensearch.search.SearchModule;

public final class AlertingModels {

    /** Alerting's default for plugins.alerting.action_throttle_max_value (24 h); the minimum is 1 minute. */
    private static final TimeValue MAX_THROTTLE = TimeValue.timeValueHours(24);
    private static final TimeValue MIN_THROTTLE = TimeValue.timeValueMinutes(1);

    /** A refusal at one stage, with the status and message the caller would get back. */
    private static final class Refused extends Exception {
        final String stage;
        final RestStatus status;
        final String cause;

        Refused(String stage, RestStatus status, String message, String cause) {
            super(message);
            this.stage = stage;
            this.status = status;
            this.cause = cause;
        }
    }

    /** Deprecated names the parsers met: the REST layer only logs them, so they are reported, not refused. */
    private static final class CollectingDeprecations implements DeprecationHandler {
        final List<String> seen = new ArrayList<>();

        private static String where(Supplier<XContentLocation> location) {
            XContentLocation at = location == null ? null : location.get();
            return at == null ? "" : " at [" + at.lineNumber + ":" + at.columnNumber + "]";
        }

        @Override
        public void usedDeprecatedName(String parser, Supplier<XContentLocation> location, String used, String modern) {
            seen.add("[" + parser + "] deprecated field [" + used + "], use [" + modern + "]" + where(location));
        }

        @Override
        public void usedDeprecatedField(String parser, Supplier<XContentLocation> location, String used, String with) {
            seen.add("[" + parser + "] deprecated field [" + used + "], replaced by [" + with + "]" + where(location));
        }

        @Override
        public void usedDeprecatedField(String parser, Supplier<XContentLocation> location, String used) {
            seen.add("[" + parser + "] deprecated field [" + used + "]" + where(location));
        }
    }

    private AlertingModels() {}

    /** The entries Alerting registers (AlertingPlugin.getNamedXContent) on top of core search's queries and aggs. */
    static NamedXContentRegistry registry() {
        List<NamedXContentRegistry.Entry> entries = new ArrayList<>(
            new SearchModule(Settings.EMPTY, List.of()).getNamedXContents());
        entries.add(Monitor.Companion.getXCONTENT_REGISTRY());
        entries.add(SearchInput.Companion.getXCONTENT_REGISTRY());
        entries.add(DocLevelMonitorInput.Companion.getXCONTENT_REGISTRY());
        entries.add(QueryLevelTrigger.Companion.getXCONTENT_REGISTRY());
        entries.add(BucketLevelTrigger.Companion.getXCONTENT_REGISTRY());
        entries.add(ClusterMetricsInput.Companion.getXCONTENT_REGISTRY());
        entries.add(DocumentLevelTrigger.Companion.getXCONTENT_REGISTRY());
        entries.add(ChainedAlertTrigger.Companion.getXCONTENT_REGISTRY());
        entries.add(RemoteMonitorTrigger.Companion.getXCONTENT_REGISTRY());
        entries.add(Workflow.Companion.getXCONTENT_REGISTRY());
        return new NamedXContentRegistry(entries);
    }

    private static String describe(Throwable e) {
        return e.getClass().getName() + ": " + e.getMessage();
    }

    private static String causeChain(Throwable e) {
        StringBuilder out = new StringBuilder(describe(e));
        for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            out.append(" <- ").append(describe(c));
        }
        return out.toString();
    }

    /** What Alerting's REST layer answers for an exception: AlertingException.wrap. */
    private static Refused alertingRefusal(String stage, Exception e) {
        AlertingException wrapped = (AlertingException) AlertingException.wrap(e);
        return new Refused(stage, wrapped.status(), wrapped.getMessage(), causeChain(e));
    }

    private static String json(ToXContent body, ToXContent.Params params) throws IOException {
        XContentBuilder builder = XContentFactory.jsonBuilder();
        body.toXContent(builder, params);
        return BytesReference.bytes(builder).utf8ToString();
    }

    // ------------------------------------------------------------------ monitors

    /** RestIndexMonitorAction's checks after Monitor.parse (Alerting 2.19.6). */
    private static void restMonitorChecks(Monitor monitor) {
        DataSources defaults = new DataSources();
        DataSources given = monitor.getDataSources();
        if (given != null && (!given.getQueryIndex().equals(defaults.getQueryIndex())
                || !given.getFindingsIndex().equals(defaults.getFindingsIndex())
                || !given.getAlertsIndex().equals(defaults.getAlertsIndex()))) {
            throw new IllegalArgumentException("Custom Data Sources are not allowed.");
        }
        if (!"alerting".equals(monitor.getOwner())) {
            throw new IllegalArgumentException("Invalid owner field");
        }
        if (!IndexUtilsKt.isMonitorOfStandardType(monitor)) {
            return;
        }
        Monitor.MonitorType type = Monitor.MonitorType.valueOf(monitor.getMonitorType().toUpperCase(Locale.ROOT));
        Class<? extends Trigger> expected;
        String label;
        switch (type) {
            case QUERY_LEVEL_MONITOR -> { expected = QueryLevelTrigger.class; label = "query level monitor"; }
            case BUCKET_LEVEL_MONITOR -> { expected = BucketLevelTrigger.class; label = "bucket level monitor"; }
            case CLUSTER_METRICS_MONITOR -> { expected = QueryLevelTrigger.class; label = "cluster metrics monitor"; }
            case DOC_LEVEL_MONITOR -> {
                expected = DocumentLevelTrigger.class;
                label = "document level monitor";
                for (Input input : monitor.getInputs()) {
                    if (input instanceof DocLevelMonitorInput docInput) {
                        for (DocLevelQuery query : docInput.getQueries()) {
                            if (!ValidationHelpersKt.isValidName(query.getName())) {
                                throw new IllegalArgumentException(
                                    "Doc level query name may not start with [_, +, -], contain '..', or contain: "
                                        + ValidationHelpersKt.getInvalidNameChars().replace("\\", ""));
                            }
                        }
                    }
                }
            }
            default -> { return; }
        }
        for (Trigger trigger : monitor.getTriggers()) {
            if (!expected.isInstance(trigger)) {
                throw new IllegalArgumentException(
                    "Illegal trigger type, " + trigger.getClass().getName() + ", for " + label);
            }
        }
    }

    /** TransportIndexMonitorAction.validateActionThrottle with the default limits. */
    private static void transportMonitorChecks(Monitor monitor) {
        for (Trigger trigger : monitor.getTriggers()) {
            for (Action action : trigger.getActions()) {
                if (action.getThrottle() == null) {
                    continue;
                }
                TimeValue throttle = new TimeValue(
                    Duration.of(action.getThrottle().getValue(), action.getThrottle().getUnit()).toMillis());
                if (throttle.compareTo(MAX_THROTTLE) > 0) {
                    throw new IllegalArgumentException("Can only set throttle period less than or equal to " + MAX_THROTTLE);
                }
                if (throttle.compareTo(MIN_THROTTLE) < 0) {
                    throw new IllegalArgumentException("Can only set throttle period greater than or equal to " + MIN_THROTTLE);
                }
            }
        }
    }

    static String checkMonitor(NamedXContentRegistry registry, String body, DeprecationHandler deprecations)
            throws Refused {
        Monitor monitor;
        try (XContentParser xcp = JsonXContent.jsonXContent.createParser(registry, deprecations, body)) {
            XContentParserUtils.ensureExpectedToken(XContentParser.Token.START_OBJECT, xcp.nextToken(), xcp);
            monitor = Monitor.parse(xcp, Monitor.NO_ID, Monitor.NO_VERSION);
            restMonitorChecks(monitor);
        } catch (Exception e) {
            throw alertingRefusal("parse", e);
        }
        IndexMonitorRequest request = new IndexMonitorRequest(
            Monitor.NO_ID, SequenceNumbers.UNASSIGNED_SEQ_NO, SequenceNumbers.UNASSIGNED_PRIMARY_TERM,
            WriteRequest.RefreshPolicy.IMMEDIATE, RestRequest.Method.POST, monitor, null);
        ActionRequestValidationException invalid = request.validate();
        if (invalid != null) {
            throw new Refused("validate", RestStatus.BAD_REQUEST, invalid.getMessage(), describe(invalid));
        }
        try {
            transportMonitorChecks(request.getMonitor());
        } catch (Exception e) {
            throw alertingRefusal("transport", e);
        }
        // The plugin indexes {"monitor": {...}} into its config index and parses it back with
        // ScheduledJob.parse on every run: a body that does not survive this never runs.
        String stored;
        try {
            XContentBuilder builder = XContentFactory.jsonBuilder();
            request.getMonitor().toXContentWithUser(builder, new ToXContent.MapParams(Map.of("with_type", "true")));
            stored = BytesReference.bytes(builder).utf8ToString();
            try (XContentParser xcp = JsonXContent.jsonXContent.createParser(
                    registry, DeprecationHandler.IGNORE_DEPRECATIONS, stored)) {
                ScheduledJob.Companion.parse(xcp, "stored-id", 1L);
            }
        } catch (Exception e) {
            throw new Refused("stored", ExceptionsHelper.status(e), e.getMessage(), causeChain(e));
        }
        return stored;
    }

    // ----------------------------------------------------------- notifications

    /** ConfigIndexingActions.validateConfig (Notifications 2.19), the parts that need no other config. */
    private static void transportConfigChecks(NotificationConfig config) {
        ConfigType type = config.getConfigType();
        if (type == ConfigType.NONE) {
            throw new IllegalArgumentException("NotificationConfig with type NONE is not acceptable");
        }
        if (type == ConfigType.MICROSOFT_TEAMS
                && !((MicrosoftTeams) config.getConfigData()).getUrl().matches("(?s).*https://.*\\.webhook\\.office\\.com.*")) {
            throw new IllegalArgumentException("Wrong Microsoft Teams url. Should contain \"webhook.office.com\"");
        }
        if (type == ConfigType.EMAIL) {
            Email email = (Email) config.getConfigData();
            if (email.getEmailGroupIds().contains(email.getEmailAccountID())) {
                throw new IllegalArgumentException("Config IDs " + email.getEmailAccountID()
                    + " is in both emailAccountID and emailGroupIds");
            }
        }
    }

    static String checkConfig(NamedXContentRegistry registry, String body, DeprecationHandler deprecations)
            throws Refused {
        CreateNotificationConfigRequest request;
        try (XContentParser xcp = JsonXContent.jsonXContent.createParser(registry, deprecations, body)) {
            xcp.nextToken(); // what RestRequest.contentParserNextToken() does before parse
            request = CreateNotificationConfigRequest.parse(xcp, null);
        } catch (Exception e) {
            throw new Refused("parse", ExceptionsHelper.status(e), e.getMessage(), causeChain(e));
        }
        ActionRequestValidationException invalid = request.validate();
        if (invalid != null) {
            throw new Refused("validate", RestStatus.BAD_REQUEST, invalid.getMessage(), describe(invalid));
        }
        try {
            transportConfigChecks(request.getNotificationConfig());
        } catch (Exception e) {
            throw new Refused("transport", RestStatus.NOT_ACCEPTABLE, e.getMessage(), causeChain(e));
        }
        String stored;
        try {
            stored = json(request.getNotificationConfig(), ToXContent.EMPTY_PARAMS);
            try (XContentParser xcp = JsonXContent.jsonXContent.createParser(
                    registry, DeprecationHandler.IGNORE_DEPRECATIONS, stored)) {
                xcp.nextToken();
                NotificationConfig.parse(xcp);
            }
        } catch (Exception e) {
            throw new Refused("stored", ExceptionsHelper.status(e), e.getMessage(), causeChain(e));
        }
        return stored;
    }

    // ------------------------------------------------------------------- main

    private static String verdict(String kind, String label, String stored, Refused refused, List<String> deprecations)
            throws IOException {
        XContentBuilder out = XContentFactory.jsonBuilder().startObject()
            .field("kind", kind)
            .field("label", label)
            .field("ok", refused == null);
        if (refused == null) {
            out.field("stored", stored);
        } else {
            out.field("stage", refused.stage)
                .field("status", refused.status.getStatus())
                .field("error", refused.getMessage())
                .field("cause", refused.cause);
        }
        out.field("deprecations", deprecations).endObject();
        return BytesReference.bytes(out).utf8ToString();
    }

    public static void main(String[] args) throws IOException {
        // Verdicts own stdout; whatever the libraries print (log4j's default console appender
        // writes to System.out, e.g. AlertingException.wrap logs every error) goes to stderr.
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
        System.setOut(System.err);
        NamedXContentRegistry registry = registry();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        int lineNumber = 0;
        while ((line = in.readLine()) != null) {
            lineNumber++;
            if (line.isBlank()) {
                continue;
            }
            String[] parts = line.split("\t", 3);
            CollectingDeprecations deprecations = new CollectingDeprecations();
            String stored = null;
            Refused refused = null;
            if (parts.length != 3) {
                refused = new Refused("input", RestStatus.BAD_REQUEST,
                    "stdin line " + lineNumber + ": expected <kind> TAB <label> TAB <json>", "");
                parts = new String[] {"", "line " + lineNumber, ""};
            } else {
                try {
                    stored = switch (parts[0]) {
                        case "monitor" -> checkMonitor(registry, parts[2], deprecations);
                        case "notification_channel" -> checkConfig(registry, parts[2], deprecations);
                        default -> throw new Refused("input", RestStatus.BAD_REQUEST,
                            "stdin line " + lineNumber + ": unknown kind [" + parts[0] + "]", "");
                    };
                } catch (Refused r) {
                    refused = r;
                }
            }
            out.println(verdict(parts[0], parts[1], stored, refused, deprecations.seen));
        }
    }
}
