"""Short policy sentences written for the tests, one small set per domain (shared by tagger and retraining tests)."""

TOPICS = {
    "5g": ["加快5G基站和千兆光网建设，扩大网络覆盖。", "推进5G网络共建共享，提升信息通信服务能力。"],
    "sme": ["加大对中小企业的融资支持，降低小微企业成本。", "培育专精特新中小企业，支持民营企业发展。"],
    "carbon": ["推动工业节能降碳，建设绿色工厂。", "实施碳达峰行动，提高能源利用效率。"],
    "supply_chain": ["提升产业链供应链韧性和安全水平。", "实施强链补链行动，保障重点产业链稳定。"],
}
NONE = ["召开新闻发布会介绍有关情况。", "会议由主任主持，各部门负责人出席。"]
