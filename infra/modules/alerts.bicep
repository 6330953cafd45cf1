// Log alerts on Application Insights. The app logs one line per event with an `event` field (customDimensions);
// each rule looks for the events that need a person, split by mailbox so that each mailbox alerts on its own.
param location string
param tags object
param applicationInsightsId string
param ruleNamePrefix string
param actionGroupName string
@description('E-mail address that receives the alerts; empty creates the rules without a notification.')
param alertEmail string
@description('Comma-separated MAILBOXES setting: the mailboxes that are expected to receive notifications.')
param mailboxes string
@minValue(1)
@maxValue(48)
param notificationSilenceHours int
@minValue(0)
param functionFailureThreshold int
@description('MALWARE_SCANNING=defender: the malware-unscanned rule exists only then.')
param malwareScanning bool = false

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'mailingest'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actions = empty(alertEmail) ? [] : [actionGroup.id]

// KQL verbatim string of MAILBOXES (a double quote is doubled); the query takes the mailbox before the first '/'.
var mailboxesLiteral = '@"${replace(mailboxes, '"', '""')}"'

var alwaysRules = [
  {
    name: 'poisoned'
    displayName: 'Mail ingest: message parked in a poison queue'
    description: 'A queue message failed every attempt and was moved to a poison queue; its mail was not copied.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT5M'
    queryRange: 'PT5M'
    threshold: 0
    periods: 1
    dimension: 'mailbox'
    // The app's event, and the host's own line for a message it moves (covers both queues).
    query: 'union (traces | where tostring(customDimensions.event) in ("ingest.poisoned", "lifecycle.poisoned", "event.poisoned") | extend mailbox = tostring(customDimensions.mailbox)), (traces | where message startswith "Message has reached MaxDequeueCount" | extend mailbox = "(host)") | project timestamp, mailbox'
  }
  {
    // GRAPH_DELIVERY=eventgrid: logged by every maintain pass while dead-letter blobs remain (shared/ops/eventgrid.py).
    name: 'eventgrid-deadlettered'
    displayName: 'Mail ingest: Event Grid dead-lettered Graph events'
    description: 'Event Grid could not deliver Graph events to the app\'s queue within its retries; they are in the dead-letter container.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    queryRange: 'PT15M'
    threshold: 0
    periods: 1
    dimension: 'container'
    query: 'traces | where tostring(customDimensions.event) == "eventgrid.deadlettered" | project timestamp, container = tostring(customDimensions.container)'
  }
  {
    name: 'subscription-failed'
    displayName: 'Mail ingest: subscription renewal or creation failed'
    description: 'Graph refused to create or renew the change notification subscription of a mailbox folder.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    queryRange: 'PT15M'
    threshold: 0
    periods: 1
    dimension: 'mailbox'
    query: 'traces | where tostring(customDimensions.event) == "subscription.failed" | project timestamp, mailbox = tostring(customDimensions.mailbox)'
  }
  {
    name: 'needs-consent'
    displayName: 'Mail ingest: mailbox needs consent'
    description: 'The app may not read a configured mailbox: grant admin consent or fix the Exchange role assignment.'
    severity: 1
    frequency: 'PT15M'
    window: 'PT15M'
    queryRange: 'PT15M'
    threshold: 0
    periods: 1
    dimension: 'mailbox'
    query: 'traces | where tostring(customDimensions.event) == "auth.needs_consent" | project timestamp, mailbox = tostring(customDimensions.mailbox)'
  }
  {
    name: 'silent-mailbox'
    displayName: 'Mail ingest: no notification for a mailbox for ${notificationSilenceHours} h'
    description: 'No change notification was accepted for a configured mailbox in the last ${notificationSilenceHours} hours.'
    severity: 3
    frequency: 'PT1H'
    window: 'PT1H'
    // Two days of data (the longest a log alert reads); the query keeps the last N hours of them.
    queryRange: 'P2D'
    threshold: 0
    periods: 1
    dimension: 'mailbox'
    query: 'let seen = traces | where timestamp > ago(${notificationSilenceHours}h) and tostring(customDimensions.event) == "notification.accepted" | distinct mailbox = tolower(tostring(customDimensions.mailbox)); print raw = ${mailboxesLiteral} | mv-expand entry = split(raw, ",") to typeof(string) | where entry !contains "://" | extend mailbox = tolower(trim(@"\\s+", tostring(split(entry, "/")[0]))) | where isnotempty(mailbox) | distinct mailbox | join kind=leftanti seen on mailbox | extend timestamp = now() | project timestamp, mailbox'
  }
  {
    name: 'mail-account-failing'
    displayName: 'Mail ingest: an IMAP or POP3 account keeps failing'
    description: 'Polls of an IMAP or POP3 account failed three times or more in 30 minutes (credentials, TLS, connection limits, the server down).'
    severity: 2
    frequency: 'PT15M'
    window: 'PT30M'
    queryRange: 'PT30M'
    threshold: 2
    periods: 1
    dimension: 'account'
    query: 'traces | where tostring(customDimensions.event) == "source.poll_failed" | project timestamp, account = tostring(customDimensions.account)'
  }
  {
    name: 'function-errors'
    displayName: 'Mail ingest: function failures'
    description: 'Function invocations failed or raised exceptions.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    queryRange: 'PT15M'
    threshold: functionFailureThreshold
    periods: 1
    dimension: 'function'
    query: 'union (requests | where success == false | project timestamp, function = operation_Name), (exceptions | project timestamp, function = operation_Name)'
  }
]

// MALWARE_SCANNING=defender. "Persists" is unscanned hand-offs in two consecutive 30-minute windows: one alone is a
// file Defender could not scan (a password-protected PDF is `Not scanned`, the mail is handed off marked), which the
// hand-off message already says; the same in the next window too means no verdicts arrive (scanning off, the cap
// reached, the topic or its subscription broken) and a person must look.
var malwareRules = [
  {
    name: 'malware-unscanned'
    displayName: 'Mail ingest: mails handed off without malware verdicts'
    description: 'Mails were handed off with files that have no Defender verdict (none within MALWARE_SCAN_TIMEOUT_MINUTES, or Not scanned), in two consecutive 30-minute windows.'
    severity: 2
    frequency: 'PT30M'
    window: 'PT30M'
    // Two windows of data, the default range of a two-period rule.
    queryRange: 'PT1H'
    threshold: 0
    periods: 2
    dimension: 'mailbox'
    query: 'traces | where tostring(customDimensions.event) == "malware.unscanned" | project timestamp, mailbox = tostring(customDimensions.mailbox)'
  }
]

var rules = concat(alwaysRules, malwareScanning ? malwareRules : [])

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in rules: {
    name: '${ruleNamePrefix}${rule.name}'
    location: location
    tags: tags
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [
        applicationInsightsId
      ]
      evaluationFrequency: rule.frequency
      windowSize: rule.window
      overrideQueryTimeRange: rule.queryRange
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Count'
            operator: 'GreaterThan'
            threshold: rule.threshold
            dimensions: [
              {
                name: rule.dimension
                operator: 'Include'
                values: [
                  '*'
                ]
              }
            ]
            // Every one of the rule's consecutive windows must fail.
            failingPeriods: {
              numberOfEvaluationPeriods: rule.periods
              minFailingPeriodsToAlert: rule.periods
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: actions
      }
    }
  }
]
